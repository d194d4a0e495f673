// Package testenv runs a real Kubernetes control plane (etcd,
// kube-apiserver, kube-controller-manager at the versions pinned in
// tools/k8s and tools/etcd) for tests and the lab.
//
// Where things run: every child runs in a network namespace of its own,
// /run/netns/fp-cp-<pid>-<rand>, created by Start and deleted by Stop. Inside
// it the ports are fixed (etcd 2379/2380, apiserver 6443, controller-manager
// 10257), so parallel envs never compete for ports and no port is chosen and
// then lost to someone else before a child binds it. The caller, in its own
// namespace, reaches the apiserver through a TCP forwarder that Start listens
// with (Options.ListenAddress, default a free port on 127.0.0.1); Env.Host,
// Env.Config and the kubeconfigs point there. The forwarder lives in the
// calling process, so the apiserver is reachable from outside only while the
// process that called Start runs - which is also how long the children live.
//
// Children are forked from a thread that stays in the env's namespace, with
// Pdeathsig, so they die with the calling process even if Stop never runs;
// the next Start removes namespaces and directories such a process left.
//
// Creating a namespace needs root (CAP_SYS_ADMIN).
package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Options configures Start; the zero value is a working control plane.
type Options struct {
	// ServiceClusterIPRange defaults to 10.96.0.0/16.
	ServiceClusterIPRange string
	// ClusterCIDR, when set, makes the controller-manager allocate each
	// Node's podCIDR from it (with NodeCIDRMaskSize, default 24).
	ClusterCIDR      string
	NodeCIDRMaskSize int
	// ListenAddress is where the forwarder to the apiserver listens, in the
	// caller's namespace. Default 127.0.0.1:0 (a free loopback port).
	ListenAddress string
	// AdvertiseAddress is the apiserver's address inside its namespace and
	// the endpoint of the `kubernetes` Service. Default 192.0.2.1 (TEST-NET-1,
	// never routed, so it cannot clash with a lab network). Endpoints reject
	// loopback, which is why it is not 127.0.0.1.
	AdvertiseAddress string
	// ExtraSANs are added to the serving certificate (IPs or DNS names).
	ExtraSANs []string
	// Users get static tokens in addition to the admin and kube-proxy users.
	Users []User
	// NoControllerManager skips kube-controller-manager: faster, but no
	// default ServiceAccounts, no EndpointSlice controller, and namespace
	// deletion never finishes.
	NoControllerManager bool
	// ExtraAPIServerArgs are appended to kube-apiserver's flags.
	ExtraAPIServerArgs []string
	// BinDir overrides $FASTPATH_K8S_BIN and the repo's tools/bin.
	BinDir string
	// TempDir is where the env's directory goes; default os.TempDir().
	TempDir string
	// ExtraControllerManagerArgs are appended to kube-controller-manager's flags.
	ExtraControllerManagerArgs []string
	// Detached is for control planes that outlive the process that started
	// them (the lab): the children run in NetNS (an existing namespace, which
	// Stop leaves alone, and whose addresses the caller sets up, including
	// AdvertiseAddress), keep their files in Dir (created if missing, kept
	// by Stop), have no parent-death signal and lead sessions of their own.
	// The caller ends them by PID (Env.PIDs); Stop is only for a failed start.
	Detached bool
	NetNS    string
	Dir      string
	// StartTimeout bounds readiness; default 60s.
	StartTimeout time.Duration
}

// Env is a running control plane.
type Env struct {
	Name             string // network namespace name, also the dir's base name
	Dir              string // certificates, data and one log per child
	Host             string // https://ADDR:PORT of the forwarder
	Config           *rest.Config
	Clientset        *kubernetes.Clientset
	KubeconfigPath   string // admin (system:masters)
	CAData           []byte
	Admin, KubeProxy User
	Users            []User // all static-token users, including the two above
	AdvertiseAddress net.IP
	ServiceCIDR      netip.Prefix

	opts     Options
	bins     map[string]string
	pki      *pki
	ns       *nsThread
	fwd      *forwarder
	procs    []*proc
	kcm      *proc
	kcmUser  User
	stopOnce sync.Once
	stopErr  error
}

const (
	etcdClientURL = "http://127.0.0.1:2379"
	etcdPeerURL   = "http://127.0.0.1:2380"
	apiserverAddr = "127.0.0.1:6443"
	// APIServerPort is the apiserver's port inside the env's namespace. It
	// listens on every address there, so a namespace joined to the env's by
	// a link of its own reaches it at https://<env-side address>:6443 (give
	// that address in Options.ExtraSANs; see WriteKubeconfigFor).
	APIServerPort = 6443
)

// Start runs a control plane and returns when it is ready: /readyz answers
// ok and, with the controller-manager, the default ServiceAccount exists.
// ctx bounds the start only; the env runs until Stop.
func Start(ctx context.Context, opts Options) (*Env, error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	bins, err := findBins(opts.BinDir)
	if err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, errNotRoot
	}
	e, err := newEnv(opts, bins)
	if err != nil {
		return nil, err
	}
	if err := e.start(ctx); err != nil {
		_ = e.Stop()
		return nil, err
	}
	return e, nil
}

var errNotRoot = errors.New("testenv needs root to create a network namespace")

func (o *Options) fill() error {
	if o.ServiceClusterIPRange == "" {
		o.ServiceClusterIPRange = "10.96.0.0/16"
	}
	if o.ListenAddress == "" {
		o.ListenAddress = "127.0.0.1:0"
	}
	if o.AdvertiseAddress == "" {
		o.AdvertiseAddress = "192.0.2.1"
	}
	if o.NodeCIDRMaskSize == 0 {
		o.NodeCIDRMaskSize = 24
	}
	if o.TempDir == "" {
		o.TempDir = os.TempDir()
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = 60 * time.Second
	}
	if o.Detached && (o.NetNS == "" || o.Dir == "") {
		return errors.New("a detached control plane needs NetNS and Dir")
	}
	if ip := net.ParseIP(o.AdvertiseAddress); ip == nil || ip.To4() == nil {
		return fmt.Errorf("AdvertiseAddress %q: want an IPv4 address", o.AdvertiseAddress)
	}
	_, err := netip.ParsePrefix(o.ServiceClusterIPRange)
	return err
}

func findBins(dir string) (map[string]string, error) {
	if dir == "" {
		var err error
		if dir, err = BinDir(); err != nil {
			return nil, err
		}
	}
	bins := map[string]string{}
	for _, name := range requiredBins {
		path, err := binaryIn(dir, name)
		if err != nil {
			return nil, err
		}
		bins[name] = path
	}
	return bins, nil
}

func newEnv(opts Options, bins map[string]string) (*Env, error) {
	collectLeftovers(opts.TempDir)
	name := envName()
	dir := filepath.Join(opts.TempDir, name)
	mkdir := os.Mkdir
	if opts.Detached {
		name, dir, mkdir = opts.NetNS, opts.Dir, os.MkdirAll
	}
	if err := mkdir(dir, 0o700); err != nil {
		return nil, err
	}
	svc := netip.MustParsePrefix(opts.ServiceClusterIPRange).Masked()
	e := &Env{
		Name: name, Dir: dir, opts: opts, bins: bins, ServiceCIDR: svc,
		AdvertiseAddress: net.ParseIP(opts.AdvertiseAddress).To4(),
		Admin:            User{Name: adminUser, Groups: []string{"system:masters"}},
		KubeProxy:        User{Name: KubeProxyUser},
	}
	e.Users = append([]User{e.Admin, e.KubeProxy}, opts.Users...)
	// The controller-manager gets system:masters instead of per-controller
	// ServiceAccount credentials: the controllers behave the same, and it
	// saves the token round trips at every start.
	e.Users = append(e.Users, User{Name: kcmUser, Groups: []string{"system:masters"}})
	for i := range e.Users {
		if e.Users[i].Token == "" {
			e.Users[i].Token = randomHex(16)
		}
	}
	e.Admin, e.KubeProxy, e.kcmUser = e.Users[0], e.Users[1], e.Users[len(e.Users)-1]
	return e, nil
}

func (e *Env) start(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, e.opts.StartTimeout)
	defer cancel()
	if err := e.prepare(); err != nil {
		return err
	}
	if err := e.startEtcd(ctx); err != nil {
		return err
	}
	apiserver, err := e.ns.startProc(e.Dir, "kube-apiserver", e.bins["kube-apiserver"], e.apiserverArgs())
	if err != nil {
		return err
	}
	e.procs = append(e.procs, apiserver)
	// Started before the apiserver is ready: it retries on its own, and the
	// two start-ups overlap.
	if err := e.startControllerManager(); err != nil {
		return err
	}
	if err := e.connect(); err != nil {
		return err
	}
	if err := e.waitFor(ctx, apiserver, e.readyz); err != nil {
		return err
	}
	return e.waitForDefaultServiceAccount(ctx)
}

// prepare creates the namespace, the certificates, the token file and the
// forwarder: everything before the first child.
func (e *Env) prepare() error {
	var err error
	if e.ns, err = newNSThread(e.Name, e.opts.Detached); err != nil {
		return err
	}
	if !e.opts.Detached {
		if err := e.ns.addLoopbackAddr(e.AdvertiseAddress); err != nil {
			return fmt.Errorf("advertise address: %w", err)
		}
	}
	firstIP := e.ServiceCIDR.Addr().Next()
	sans := append([]string{e.AdvertiseAddress.String()}, e.opts.ExtraSANs...)
	if e.pki, err = writePKI(e.Dir, net.IP(firstIP.AsSlice()), sans); err != nil {
		return err
	}
	e.CAData = e.pki.caPEM
	if err := writeTokenFile(e.path("tokens.csv"), e.Users); err != nil {
		return err
	}
	e.fwd, err = newForwarder(e.opts.ListenAddress, func() (net.Conn, error) { return e.ns.dial(apiserverAddr) })
	if err != nil {
		return fmt.Errorf("forwarder: %w", err)
	}
	e.Host = "https://" + e.fwd.addr()
	return nil
}

func (e *Env) path(name string) string { return filepath.Join(e.Dir, name) }

func (e *Env) startEtcd(ctx context.Context) error {
	args := []string{
		"--name=cp", "--data-dir=" + e.path("etcd"),
		"--listen-client-urls=" + etcdClientURL, "--advertise-client-urls=" + etcdClientURL,
		"--listen-peer-urls=" + etcdPeerURL, "--initial-advertise-peer-urls=" + etcdPeerURL,
		"--initial-cluster=cp=" + etcdPeerURL,
		// The data is thrown away at Stop; fsync would only slow bulk
		// creates (benchmarks make thousands of Services).
		"--unsafe-no-fsync",
		// A lone member elects itself after one election timeout (default
		// 1 s, which the apiserver waits out); with no peers there is no
		// leadership to lose, so a short one is safe.
		"--heartbeat-interval=50", "--election-timeout=250",
	}
	p, err := e.ns.startProc(e.Dir, "etcd", e.bins["etcd"], args)
	if err != nil {
		return err
	}
	e.procs = append(e.procs, p)
	// The apiserver gives up on an etcd that is not there yet, so wait for
	// the client port first.
	return e.waitFor(ctx, p, func(context.Context) (bool, error) {
		c, err := e.ns.dial("127.0.0.1:2379")
		if err != nil {
			return false, nil
		}
		return true, c.Close()
	})
}

func (e *Env) apiserverArgs() []string {
	args := []string{
		"--etcd-servers=" + etcdClientURL,
		"--secure-port=6443", "--bind-address=0.0.0.0", // all of it inside the env's namespace
		"--advertise-address=" + e.AdvertiseAddress.String(),
		"--cert-dir=" + e.path("apiserver-certs"),
		"--tls-cert-file=" + e.pki.serverCert, "--tls-private-key-file=" + e.pki.serverKey,
		"--client-ca-file=" + e.pki.caCert,
		"--token-auth-file=" + e.path("tokens.csv"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + e.pki.saPub,
		"--service-account-signing-key-file=" + e.pki.saKey,
		"--service-cluster-ip-range=" + e.ServiceCIDR.String(),
		"--authorization-mode=RBAC",
		"--allow-privileged=true",
		"--profiling=false",
	}
	return append(args, e.opts.ExtraAPIServerArgs...)
}

func (e *Env) startControllerManager() error {
	if e.opts.NoControllerManager {
		return nil
	}
	kubeconfig := e.path("controller-manager.kubeconfig")
	if err := writeKubeconfig(kubeconfig, "https://"+apiserverAddr, e.CAData, e.kcmUser); err != nil {
		return err
	}
	args := []string{
		"--kubeconfig=" + kubeconfig,
		"--leader-elect=false", // a single instance; the election only costs time
		"--bind-address=127.0.0.1",
		"--root-ca-file=" + e.pki.caCert,
		"--service-account-private-key-file=" + e.pki.saKey,
		"--service-cluster-ip-range=" + e.ServiceCIDR.String(),
	}
	args = append(args, e.opts.ExtraControllerManagerArgs...)
	if e.opts.ClusterCIDR != "" {
		args = append(args, "--allocate-node-cidrs=true", "--cluster-cidr="+e.opts.ClusterCIDR,
			fmt.Sprintf("--node-cidr-mask-size=%d", e.opts.NodeCIDRMaskSize))
	}
	p, err := e.ns.startProc(e.Dir, "kube-controller-manager", e.bins["kube-controller-manager"], args)
	if err != nil {
		return err
	}
	e.procs = append(e.procs, p)
	e.kcm = p
	return nil
}

// connect builds the admin client and kubeconfig, both through the forwarder.
func (e *Env) connect() error {
	e.Config = &rest.Config{
		Host:            e.Host,
		BearerToken:     e.Admin.Token,
		TLSClientConfig: rest.TLSClientConfig{CAData: e.CAData},
		// No client-side rate limit: tests and benchmarks want to see the
		// apiserver's speed, not client-go's default 5 QPS.
		QPS: -1,
	}
	var err error
	if e.Clientset, err = kubernetes.NewForConfig(e.Config); err != nil {
		return err
	}
	e.KubeconfigPath = e.path("admin.kubeconfig")
	return e.WriteKubeconfig(e.KubeconfigPath, e.Admin)
}

func (e *Env) readyz(ctx context.Context) (bool, error) {
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	body, err := e.Clientset.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(rctx)
	return err == nil && string(body) == "ok", nil
}

func (e *Env) waitForDefaultServiceAccount(ctx context.Context) error {
	if e.opts.NoControllerManager {
		return nil
	}
	return e.waitFor(ctx, e.kcm, func(ctx context.Context) (bool, error) {
		_, err := e.Clientset.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, nil
	})
}

// waitFor polls cond until it holds. A child that exits meanwhile fails the
// wait with its own log; a timeout blames the child the wait was for.
func (e *Env) waitFor(ctx context.Context, blame *proc, cond func(context.Context) (bool, error)) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, p := range e.procs {
			select {
			case <-p.exited:
				return p.failure(fmt.Errorf("exited during start: %v", p.err))
			default:
			}
		}
		ok, err := cond(ctx)
		if err != nil {
			return blame.failure(err)
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return blame.failure(fmt.Errorf("not ready: %w", context.Cause(ctx)))
		case <-tick.C:
		}
	}
}

// PIDs returns the process IDs of the env's children.
func (e *Env) PIDs() []int {
	var pids []int
	for _, p := range e.procs {
		pids = append(pids, p.pid())
	}
	return pids
}

// ProcessIDs maps each child's name to its process ID.
func (e *Env) ProcessIDs() map[string]int {
	m := map[string]int{}
	for _, p := range e.procs {
		m[p.name] = p.pid()
	}
	return m
}

// NetnsPath is the env's network namespace, for `nsenter --net=PATH`.
func (e *Env) NetnsPath() string { return filepath.Join(netnsDir, e.Name) }

// LogPaths maps each child's name to its log file.
func (e *Env) LogPaths() map[string]string {
	m := map[string]string{}
	for _, p := range e.procs {
		m[p.name] = p.logPath
	}
	return m
}

// Stop kills the env's children (only them: each is its own process group),
// waits for them, and removes the forwarder, the namespace and the env's
// directory. It is safe to call more than once.
func (e *Env) Stop() error {
	e.stopOnce.Do(func() { e.stopErr = e.stop() })
	return e.stopErr
}

func (e *Env) stop() error {
	// Reverse order: clients go before the servers they would log errors about.
	for i := len(e.procs) - 1; i >= 0; i-- {
		e.procs[i].kill()
	}
	if e.fwd != nil {
		e.fwd.close()
	}
	var errs []error
	if e.ns != nil {
		errs = append(errs, e.ns.close())
	}
	if !e.opts.Detached {
		errs = append(errs, os.RemoveAll(e.Dir))
	}
	return errors.Join(errs...)
}
