// Package agenttest runs the real fastpath-agent and fastpath-bgp binaries
// for tests that need whole node processes (L2 failover, BGP against a
// real router): built once per test, one process per node, its datapath
// and sockets in the node's fp- namespace, stopped as the kubelet would.
// It also creates the LoadBalancer Service those tests announce.
package agenttest

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/fastpath-net/fastpath/internal/datapath"
	"github.com/fastpath-net/fastpath/internal/nettopo"
	"github.com/fastpath-net/fastpath/internal/testpriv"
)

// Build compiles cmd/fastpath-agent into the test's temp dir.
func Build(t *testing.T) string {
	t.Helper()
	return BuildCmd(t, "fastpath-agent")
}

// BuildCmd compiles cmd/<name> into the test's temp dir.
func BuildCmd(t *testing.T, name string) string {
	t.Helper()
	_, self, _, _ := runtime.Caller(0)
	src := filepath.Join(filepath.Dir(self), "..", "..", "cmd", name)
	bin := filepath.Join(t.TempDir(), name)
	if out, err := exec.Command("go", "build", "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// Agent is one node's agent (or fastpath-bgp); Cmd is nil while it is not
// running.
type Agent struct {
	Name string // the Node name
	NS   *nettopo.NS
	Cmd  *exec.Cmd
	pin  string
	log  string
}

// Start runs the agent in the root namespace with its datapath in a.NS
// (a bpffs pin dir of its own, kept across restarts, removed at the end),
// small maps, and extra flags. Its log is shown if the test fails.
func Start(t *testing.T, bin, kubeconfig string, a *Agent, extra ...string) {
	t.Helper()
	if a.pin == "" {
		pin, err := os.MkdirTemp("/sys/fs/bpf", "fp-agent-")
		if err != nil {
			testpriv.Unavailable(t, "cannot create a directory on bpffs: "+err.Error())
		}
		a.pin = pin
		t.Cleanup(func() {
			if err := datapath.Uninstall(pin); err != nil {
				t.Errorf("remove pins: %v", err)
			}
		})
	}
	launch(t, bin, a, append([]string{"--kubeconfig", kubeconfig, "--node-name", a.Name, "--netns", a.NS.Path(), "--bpffs-dir", a.pin,
		"--ct-max", "4096", "--services-max", "4096", "--backends-max", "1024", "--revnat-max", "1024",
		"--sock-revnat-max", "1024", "--affinity-max", "1024", "--log-level", "debug"}, extra...))
}

// StartBGP runs fastpath-bgp (bin, from BuildCmd) for a's node: in the
// root namespace, its speaker listening in a.NS, with extra flags. Its log
// is shown if the test fails.
func StartBGP(t *testing.T, bin, kubeconfig string, a *Agent, extra ...string) {
	t.Helper()
	launch(t, bin, a, append([]string{"--kubeconfig", kubeconfig, "--node-name", a.Name, "--netns", a.NS.Path(), "--log-level", "debug"}, extra...))
}

// launch starts bin as a's process, appending to its log file.
func launch(t *testing.T, bin string, a *Agent, args []string) {
	t.Helper()
	if a.log == "" {
		a.log = filepath.Join(t.TempDir(), a.Name+".log")
	}
	out, err := os.OpenFile(a.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a.Cmd = cmd
	t.Cleanup(func() {
		if a.Cmd == cmd {
			Stop(t, a)
		}
		if t.Failed() {
			b, _ := os.ReadFile(a.log)
			t.Logf("%s %s log:\n%s", a.Name, filepath.Base(bin), b)
		}
	})
}

// Stop ends a's agent as the kubelet would: SIGTERM, SIGKILL after 10s.
func Stop(t *testing.T, a *Agent) {
	t.Helper()
	cmd := a.Cmd
	a.Cmd = nil
	if !Terminate(cmd, 10*time.Second) {
		t.Errorf("%s agent did not stop on SIGTERM within 10s", a.Name)
	}
}

// Terminate sends cmd's process SIGTERM and waits for it to exit; after
// grace it kills it, waits, and returns false.
func Terminate(cmd *exec.Cmd, grace time.Duration) bool {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-done
		return false
	}
}

// Kill ends a's agent with SIGKILL: nothing it holds is released.
func Kill(t *testing.T, a *Agent) {
	t.Helper()
	if err := a.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = a.Cmd.Wait()
	a.Cmd = nil
}

// CreateLBService creates the LoadBalancer Service default/web
// (externalTrafficPolicy Cluster, TCP port) with one ready endpoint on
// node, its ingress IP written into the status as MetalLB or
// fastpath-operator would.
func CreateLBService(t *testing.T, cs kubernetes.Interface, ip netip.Addr, port int32, node string) {
	t.Helper()
	ctx := t.Context()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer,
			Ports: []corev1.ServicePort{{Name: "http", Port: port, Protocol: corev1.ProtocolTCP}}},
	}
	svc, err := cs.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip.String()}}
	if _, err := cs.CoreV1().Services("default").UpdateStatus(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "web-1", Namespace: "default", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.244.1.5"}, NodeName: ptr.To(node),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
		Ports: []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(port), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	if _, err := cs.DiscoveryV1().EndpointSlices("default").Create(ctx, slice, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// NewNS creates the fp- namespace name, removed when the test ends.
func NewNS(t *testing.T, name string) *nettopo.NS {
	t.Helper()
	ns, err := nettopo.NewNS(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ns.Delete(); err != nil {
			t.Errorf("remove %s: %v", ns.Name, err)
		}
	})
	return ns
}
