package cni

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/fastpath-net/fastpath/internal/cniserver"
	"github.com/fastpath-net/fastpath/internal/datapath"
	"github.com/fastpath-net/fastpath/internal/endpoint"
	"github.com/fastpath-net/fastpath/internal/ipam"
	"github.com/fastpath-net/fastpath/internal/nettopo"
	"github.com/fastpath-net/fastpath/internal/podnet"
	"github.com/fastpath-net/fastpath/internal/testpriv"
	"github.com/fastpath-net/fastpath/test/internal/syncbuf"
)

// node is one "node": an fp- network namespace, the real agent attached
// there with the CNI API on, and the pods created on it.
type node struct {
	t        *testing.T
	id       string
	ns       *nettopo.NS
	dir      string // state, conf, socket, libcni cache
	pinDir   string
	podCIDR  string
	chained  string
	services string // the agent's services file
	// kubeconfig and nodeName, when set, make the agent take services and
	// the pod CIDR from Kubernetes instead of the file and podCIDR.
	kubeconfig, nodeName string
	agent                *exec.Cmd
	log                  *syncbuf.Buffer
	pods                 []*nettopo.NS
}

func newNode(t *testing.T, podCIDR string) *node {
	t.Helper()
	testpriv.Require(t)
	n := &node{t: t, id: randomID(), podCIDR: podCIDR, log: &syncbuf.Buffer{}}
	var err error
	if n.pinDir, err = os.MkdirTemp("/sys/fs/bpf", "fp-cni-test-"); err != nil {
		testpriv.Unavailable(t, "cannot create a directory on bpffs /sys/fs/bpf: "+err.Error())
	}
	// Short: a unix socket path must fit in 108 bytes.
	if n.dir, err = os.MkdirTemp("", "fp-cni-"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.close)
	if n.ns, err = nettopo.NewNS("fp-cni-" + n.id + "-node"); err != nil {
		t.Fatal(err)
	}
	n.services = filepath.Join(n.dir, "services.yaml")
	n.writeServices("services: []\n")
	return n
}

func randomID() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (n *node) socket() string   { return filepath.Join(n.dir, "cni.sock") }
func (n *node) stateDir() string { return filepath.Join(n.dir, "state") }
func (n *node) confDir() string  { return filepath.Join(n.dir, "net.d") }

func (n *node) writeServices(yaml string) {
	n.t.Helper()
	tmp := n.services + ".tmp"
	if err := os.WriteFile(tmp, []byte(yaml), 0o644); err != nil {
		n.t.Fatal(err)
	}
	if err := os.Rename(tmp, n.services); err != nil {
		n.t.Fatal(err)
	}
}

// startAgent starts the agent and waits for its conflist.
func (n *node) startAgent() {
	n.t.Helper()
	args := []string{
		"--bpffs-dir", n.pinDir, "--netns", n.ns.Path(),
		"--cni-socket", n.socket(), "--cni-state-dir", n.stateDir(), "--cni-conf-dir", n.confDir(),
		"--ct-max", "4096", "--services-max", "4096", "--backends-max", "1024",
		"--revnat-max", "1024", "--sock-revnat-max", "1024", "--affinity-max", "1024",
		"--log-level", "debug",
	}
	if n.kubeconfig != "" {
		args = append(args, "--kubeconfig", n.kubeconfig, "--node-name", n.nodeName)
	} else {
		args = append(args, "--services-file", n.services, "--services-file-poll", "50ms", "--pod-cidr", n.podCIDR)
	}
	if n.chained != "" {
		args = append(args, "--cni-chained-plugins", n.chained)
	}
	_ = os.Remove(filepath.Join(n.confDir(), cniserver.ConflistName))
	cmd := exec.Command(filepath.Join(bin, "fastpath-agent"), args...)
	cmd.Stdout, cmd.Stderr = n.log, n.log
	if err := cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	n.agent = cmd
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(filepath.Join(n.confDir(), cniserver.ConflistName)); err == nil {
			return
		}
		if cmd.ProcessState != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	n.t.Fatalf("agent did not install its conflist within 15s\nagent log:\n%s", n.log)
}

func (n *node) stopAgent() {
	if n.agent == nil {
		return
	}
	_ = n.agent.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- n.agent.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = n.agent.Process.Kill()
		<-done
		n.t.Errorf("agent did not stop within 10s of SIGTERM")
	}
	n.agent = nil
}

func (n *node) close() {
	n.stopAgent()
	for _, p := range n.pods {
		if err := p.Delete(); err != nil {
			n.t.Errorf("delete pod netns: %v", err)
		}
	}
	if n.ns != nil {
		if hosts, err := podnet.HostIfaces(n.ns.Path()); err == nil {
			for _, h := range hosts {
				_ = datapath.DetachTC(n.pinDir, datapath.Iface{NetNS: n.ns.Path(), Name: h})
			}
		}
		if err := n.ns.Delete(); err != nil {
			n.t.Errorf("delete node netns: %v", err)
		}
	}
	if err := datapath.Uninstall(n.pinDir); err != nil {
		n.t.Errorf("remove pins: %v", err)
	}
	_ = os.RemoveAll(n.dir)
	if n.t.Failed() {
		n.t.Logf("agent log:\n%s", n.log)
	}
}

// newPod creates a pod network namespace, removed at the end of the test.
func (n *node) newPod(name string) *nettopo.NS {
	n.t.Helper()
	p, err := nettopo.NewNS("fp-cni-" + n.id + "-" + name)
	if err != nil {
		n.t.Fatal(err)
	}
	n.pods = append(n.pods, p)
	return p
}

// cni is how a runtime on this node calls the plugins.
func (n *node) cni() (*libcni.CNIConfig, *libcni.NetworkConfigList) {
	n.t.Helper()
	list, err := libcni.ConfListFromFile(filepath.Join(n.confDir(), cniserver.ConflistName))
	if err != nil {
		n.t.Fatal(err)
	}
	return libcni.NewCNIConfigWithCacheDir([]string{bin}, filepath.Join(n.dir, "cache"), nil), list
}

// rt is the runtime configuration of pod's attachment.
func rt(pod *nettopo.NS, containerID string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: containerID,
		NetNS:       pod.Path(),
		IfName:      "eth0",
		Args:        [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "demo"}, {"K8S_POD_NAME", pod.Name}},
	}
}

// inNode runs fn on a thread in the node's namespace: plugins executed
// from there run there, as they would under a runtime on the node.
func (n *node) inNode(fn func() error) error { return n.ns.Do(fn) }

func (n *node) add(r *libcni.RuntimeConf) (*current.Result, error) {
	c, list := n.cni()
	var res types.Result
	err := n.inNode(func() (err error) {
		res, err = c.AddNetworkList(context.Background(), list, r)
		return err
	})
	if err != nil {
		return nil, err
	}
	return current.NewResultFromResult(res)
}

func (n *node) mustAdd(r *libcni.RuntimeConf) *current.Result {
	n.t.Helper()
	res, err := n.add(r)
	if err != nil {
		n.t.Fatalf("ADD %s: %v", r.ContainerID, err)
	}
	return res
}

func (n *node) del(r *libcni.RuntimeConf) error {
	c, list := n.cni()
	return n.inNode(func() error { return c.DelNetworkList(context.Background(), list, r) })
}

func (n *node) check(r *libcni.RuntimeConf) error {
	c, list := n.cni()
	return n.inNode(func() error { return c.CheckNetworkList(context.Background(), list, r) })
}

func (n *node) gc(valid ...*libcni.RuntimeConf) error {
	c, list := n.cni()
	args := &libcni.GCArgs{}
	for _, r := range valid {
		args.ValidAttachments = append(args.ValidAttachments, types.GCAttachment{ContainerID: r.ContainerID, IfName: r.IfName})
	}
	return n.inNode(func() error { return c.GCNetworkList(context.Background(), list, args) })
}

func (n *node) status() error {
	c, list := n.cni()
	return n.inNode(func() error { return c.GetStatusNetworkList(context.Background(), list) })
}

// cniCode is the CNI error code of err, or -1.
func cniCode(err error) int {
	var e *types.Error
	if errors.As(err, &e) {
		return int(e.Code)
	}
	return -1
}

func wantCode(t *testing.T, err error, code int, msgPart string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got success, want CNI error %d", code)
	}
	if got := cniCode(err); got != code {
		t.Fatalf("got error %v (code %d), want code %d", err, got, code)
	}
	if !strings.Contains(err.Error(), msgPart) {
		t.Fatalf("error %q does not name %q", err, msgPart)
	}
}

// leftovers lists what attachments left behind in the node: host veths,
// leases, endpoint records and tc pins.
func (n *node) leftovers() []string {
	n.t.Helper()
	var out []string
	hosts, err := podnet.HostIfaces(n.ns.Path())
	if err != nil {
		n.t.Fatal(err)
	}
	for _, h := range hosts {
		out = append(out, "veth "+h)
	}
	alloc, err := ipam.Open(filepath.Join(n.stateDir(), "ipam"))
	if err != nil {
		n.t.Fatal(err)
	}
	for _, l := range alloc.Leases() {
		out = append(out, "lease "+l.Addr.String()+" of "+l.Owner.String())
	}
	eps, err := endpoint.Load(endpoint.Dir(n.stateDir()))
	if err != nil {
		n.t.Fatal(err)
	}
	for _, ep := range eps {
		out = append(out, "endpoint "+ep.Key.String())
	}
	pins, err := datapath.AttachedTC(n.pinDir)
	if err != nil {
		n.t.Fatal(err)
	}
	for _, p := range pins {
		if strings.Contains(p, podnet.HostPrefix) {
			out = append(out, "tc pin "+p)
		}
	}
	return out
}

func (n *node) assertClean() {
	n.t.Helper()
	if left := n.leftovers(); len(left) > 0 {
		n.t.Fatalf("left behind: %v", left)
	}
}

// withNetNS is r with another network namespace path.
func withNetNS(r *libcni.RuntimeConf, path string) *libcni.RuntimeConf {
	c := *r
	c.NetNS = path
	return &c
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
