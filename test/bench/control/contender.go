package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/fastpath-net/fastpath/internal/datapath"
	"github.com/fastpath-net/fastpath/internal/nettopo"
	"github.com/fastpath-net/fastpath/internal/testenv"
	"github.com/fastpath-net/fastpath/test/bench/internal/loadgen"
	"github.com/fastpath-net/fastpath/test/bench/internal/procstat"
	"github.com/fastpath-net/fastpath/test/internal/cplink"
	"github.com/fastpath-net/fastpath/test/internal/kubeproxy"
	"github.com/fastpath-net/fastpath/test/internal/nsproc"
)

// contenderNames are the proxies measured, in the order they run.
var contenderNames = []string{"fastpath", "iptables", "nftables"}

// node is one contender's node for one N: a router namespace with a client
// and two backends (nettopo.Star), linked to the control plane, with the
// proxy process forked from a thread inside it. Every contender and every N
// gets a fresh one, so no proxy finds another's rules or maps.
type node struct {
	star    *nettopo.Star
	link    cplink.Link
	thread  *nsproc.Thread
	servers *loadgen.Servers // one child process per node serves its backends
	prober  *prober
	dir     string // kubeconfig and the proxy's log
	// cgroup is the socket load balancer's cgroup v2 subtree ("" when the
	// node has none): the headline's fastpath node attaches it, and its
	// sock clients start in it.
	cgroup string
}

// clientHosts of a node: the VIP client and the backends. The headline's
// fastpath node adds "direct", the direct path's client: its own namespace
// on an identical veth, so no connection through a VIP ever shares a
// source with one to a backend.
var clientHosts = []string{"client", "be1", "be2"}

// namePrefix starts every namespace and bpffs directory of this run; the
// PID lets a later run remove what a killed one left (leftovers.go).
func namePrefix() string { return fmt.Sprintf("%sbc%d-", nettopo.Prefix, os.Getpid()) }

// newNode builds a node; direct adds the direct path's client and a
// socket-LB cgroup (the headline's fastpath node).
func newNode(env *testenv.Env, tag string, linkNo int, dir string, direct bool) (n *node, err error) {
	n = &node{dir: dir}
	defer func() {
		if err != nil {
			err = errors.Join(err, n.close())
			n = nil
		}
	}()
	hosts := clientHosts
	if direct {
		hosts = append(slices.Clone(hosts), "direct")
		n.cgroup = filepath.Join(cgroupRoot, namePrefix()+tag)
		if err := os.Mkdir(n.cgroup, 0o755); err != nil {
			n.cgroup = ""
			return n, fmt.Errorf("socket-LB cgroup: %w", err)
		}
	}
	if n.star, err = nettopo.NewStarNamed(namePrefix()+tag, hosts...); err != nil {
		return n, err
	}
	// With TCP metrics saved, a client's kernel keeps one entry per
	// destination address and looks it up on every connect: through N VIPs
	// it walks an N-entry table (+1.2 us a connection at 50,000 in
	// bench-datapath's profile), to the direct path's two backends a tiny
	// one. That is the client's cost of many addresses, the same with any
	// proxy, and would count against every Service path as N grows.
	if err := n.star.Sysctl("net/ipv4/tcp_no_metrics_save", "1"); err != nil {
		return n, err
	}
	if n.link, err = cplink.Add(n.star.Node, env, linkNo, tag); err != nil {
		return n, err
	}
	var ls []loadgen.Listener
	for _, be := range []string{"be1", "be2"} {
		h := n.star.Host(be)
		for _, port := range []int{portA, portB} {
			ls = append(ls, loadgen.Listener{NS: h.NS, Addr: fmt.Sprintf("%s:%d", h.Addr, port), Name: fmt.Sprintf("%s:%d", be, port)})
		}
	}
	if n.servers, err = loadgen.StartServers(ls); err != nil {
		return n, err
	}
	if n.thread, err = nsproc.NewThread(n.star.Node); err != nil {
		return n, err
	}
	if n.prober, err = newProber(n.star.Host("client").NS); err != nil {
		return n, err
	}
	return n, nil
}

func (n *node) close() error {
	if n.prober != nil {
		n.prober.close()
	}
	if n.thread != nil {
		n.thread.Close()
	}
	var errs []error
	if n.servers != nil {
		errs = append(errs, n.servers.Close())
	}
	if n.star != nil {
		if n.link.APIServerURL != "" {
			errs = append(errs, cplink.Remove(n.star.Node))
		}
		errs = append(errs, n.star.Close())
	}
	if n.cgroup != "" {
		errs = append(errs, loadgen.RemoveCgroup(n.cgroup))
	}
	return errors.Join(errs...)
}

// cgroupRoot is the cgroup v2 mount (the rest of the machine is v1).
const cgroupRoot = "/sys/fs/cgroup/unified"

// proxy is one contender's running process.
type proxy interface {
	proc() *nsproc.Child
	// synced reads the log: when the first complete programming of all
	// Services ended, and what the proxy itself reports about it.
	synced(log string) (at time.Time, detail syncDetail, ok bool, err error)
	stop() error
}

// syncDetail is what a proxy's log says about its first sync.
type syncDetail struct {
	Sync     time.Duration // the programming step itself (its own "took"/"elapsed")
	Informer time.Duration // fastpath: informer caches synced after start; 0: not reported
}

// startProxy starts contender name on n, reading the apiserver as
// system:kube-proxy over the node's control-plane link (both contenders the
// same way: no forwarder in between).
func startProxy(name string, n *node, env *testenv.Env, agentBin, kubeProxyBin string) (proxy, error) {
	kubeconfig, err := writeKubeconfig(n, env)
	if err != nil {
		return nil, err
	}
	if name == "fastpath" {
		return startAgent(n, agentBin, kubeconfig)
	}
	return startKubeProxy(name, n, kubeconfig, kubeProxyBin)
}

// writeKubeconfig writes the node's kubeconfig: system:kube-proxy over the
// node's control-plane link.
func writeKubeconfig(n *node, env *testenv.Env) (string, error) {
	kubeconfig := filepath.Join(n.dir, "kubeconfig")
	return kubeconfig, env.WriteKubeconfigFor(kubeconfig, n.link.APIServerURL, env.KubeProxy)
}

func startKubeProxy(name string, n *node, kubeconfig, kubeProxyBin string) (proxy, error) {
	c, err := kubeproxy.Start(n.thread, n.star.Node, n.dir, "kube-proxy-"+name, kubeProxyBin, kubeproxy.Config{
		Kubeconfig:  kubeconfig,
		NodeName:    nodeName,
		Mode:        name,
		ClusterCIDR: "10.250.0.0/16",
		// Min sync period: kube-proxy's default (1s), as users run it.
	})
	if err != nil {
		return nil, err
	}
	return &kubeProxy{c: c}, nil
}

type kubeProxy struct{ c *nsproc.Child }

func (k *kubeProxy) proc() *nsproc.Child { return k.c }

func (k *kubeProxy) synced(log string) (time.Time, syncDetail, bool, error) {
	at, elapsed, ok, err := kubeproxy.FirstSync(log, k.c.Started)
	return at, syncDetail{Sync: elapsed}, ok, err
}

func (k *kubeProxy) stop() error {
	// Its rules are in the node namespace, which goes with the node.
	k.c.Stop(10 * time.Second)
	return nil
}

// agent is the real fastpath-agent, run inside the node namespace like
// kube-proxy, attached to every node interface, maps pinned in a bpffs
// directory of its own.
type agent struct {
	c    *nsproc.Child
	node *node
	pin  string
}

// startAgent starts the agent on n; extra are more flags.
func startAgent(n *node, bin, kubeconfig string, extra ...string) (*agent, error) {
	pin := filepath.Join("/sys/fs/bpf", filepath.Base(n.star.Node.Name))
	if err := os.Mkdir(pin, 0o700); err != nil {
		return nil, fmt.Errorf("bpffs directory: %w", err)
	}
	a := &agent{node: n, pin: pin}
	args := []string{
		"--bpffs-dir", pin,
		"--netns", n.star.Node.Path(),
		"--interfaces", strings.Join(n.star.NodeInterfaces(), ","),
		"--kubeconfig", kubeconfig,
		"--node-name", nodeName,
		// Inside the node namespace: reachable only from there.
		"--pprof-addr", "127.0.0.1:6060",
		"--log-level", "info",
	}
	if n.cgroup != "" {
		args = append(args, "--cgroup", n.cgroup)
	}
	args = append(args, extra...)
	var err error
	if a.c, err = n.thread.Start(n.dir, "fastpath-agent", bin, args); err != nil {
		_ = datapath.Uninstall(pin)
		return nil, err
	}
	return a, nil
}

func (a *agent) proc() *nsproc.Child { return a.c }

var (
	programmedFull = regexp.MustCompile(`(?m)^time=(\S+) .*msg="datapath programmed" full=true .*took=(\S+)`)
	cachesSynced   = regexp.MustCompile(`(?m)^time=(\S+) .*msg="Kubernetes caches synced" .*took=(\S+)`)
)

func (a *agent) synced(log string) (time.Time, syncDetail, bool, error) {
	return agentSynced(log)
}

// agentSynced finds the agent's first full programming in its log (slog
// text): the first "datapath programmed" with full=true.
func agentSynced(log string) (time.Time, syncDetail, bool, error) {
	m := programmedFull.FindStringSubmatch(log)
	if m == nil {
		if l := procstat.FirstLine(log, "level=ERROR"); l != "" {
			return time.Time{}, syncDetail{}, false, fmt.Errorf("agent error: %s", l)
		}
		return time.Time{}, syncDetail{}, false, nil
	}
	at, err := time.Parse(time.RFC3339Nano, m[1])
	if err != nil {
		return time.Time{}, syncDetail{}, false, fmt.Errorf("agent log time %q: %w", m[1], err)
	}
	var d syncDetail
	d.Sync, _ = time.ParseDuration(m[2])
	if c := cachesSynced.FindStringSubmatch(log); c != nil {
		d.Informer, _ = time.ParseDuration(c[2])
	}
	return at, d, true, nil
}

func (a *agent) stop() error {
	a.c.Stop(15 * time.Second)
	var errs []error
	for _, ifc := range a.node.star.NodeInterfaces() {
		errs = append(errs, datapath.DetachTC(a.pin, datapath.Iface{NetNS: a.node.star.Node.Path(), Name: ifc}))
	}
	errs = append(errs, datapath.Uninstall(a.pin))
	return errors.Join(errs...)
}
