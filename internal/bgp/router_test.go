package bgp_test

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/fastpath-net/fastpath/internal/agenttest"
	"github.com/fastpath-net/fastpath/internal/bgp"
	"github.com/fastpath-net/fastpath/internal/birdc"
	"github.com/fastpath-net/fastpath/internal/nettopo"
	"github.com/fastpath-net/fastpath/internal/testenv"
	"github.com/fastpath-net/fastpath/internal/testpriv"
)

// The fabric of TestRouterLearnsRoutes: two nodes and a router on one
// bridge (the underlay), and an external client behind the router on a
// network of its own, so it reaches the LoadBalancer IP only through a
// route the router learned over BGP.
var (
	underlay   = netip.MustParsePrefix("192.168.70.0/24")
	routerIP   = netip.MustParseAddr("192.168.70.1")
	ghostIP    = netip.MustParseAddr("192.168.70.2") // a configured peer with no router: the garbage sender's address
	outside    = netip.MustParsePrefix("10.70.0.0/24")
	routerOut  = netip.MustParseAddr("10.70.0.1")
	clientIP   = netip.MustParseAddr("10.70.0.2")
	lbIP       = netip.MustParseAddr("203.0.113.10")
	podCIDR1   = netip.MustParsePrefix("10.244.1.0/24")
	routerASN  = 64500
	nodeASN    = 64512
	listenPort = 1179 // not 179: shows the port is the speaker's choice
)

const whoamiPort = 8080

// bgpPassword is the TCP MD5 password of the router's sessions: BIRD's
// configuration has it, the speakers read it from a Secret.
const bgpPassword = "fp-md5-secret"

type fabricNode struct {
	agenttest.Agent
	ip netip.Addr
}

// TestRouterLearnsRoutes runs the real fastpath-bgp on two nodes with a
// real apiserver and a real BIRD router peering with both. Each node
// serves the LoadBalancer IP with a whoami bound to it on lo (the stand-in
// for the datapath, which serves any IP the node receives); the client
// reaches it only through the router's kernel route, which BIRD installs
// from what it learned over BGP. The sessions carry a TCP MD5 password
// (BIRD's configuration; the speakers' from a Secret). Checked, in order:
//   - the IP (written into status by the test, as MetalLB would) and
//     node1's pod CIDR appear at the router from the nodes that should
//     advertise them, and the client reaches the Service through it;
//   - externalTrafficPolicy: Local leaves only the node with the endpoint;
//   - a speaker restart (SIGTERM, then start again) keeps the route at the
//     router throughout (graceful restart) and the client reaching it;
//   - garbage and flapping connections from a configured peer address do
//     not crash the speaker nor withdraw anything from the real router;
//   - the endpoint turning unready withdraws it, ready again brings it back;
//   - deleting the Service withdraws the route everywhere.
func TestRouterLearnsRoutes(t *testing.T) {
	testpriv.Require(t)
	birdBin, err := exec.LookPath("bird")
	if err != nil {
		testpriv.Unavailable(t, "bird (Debian bird2) is not installed: run hack/install-deps.sh")
	}
	env := testenv.StartForTest(t, testenv.Options{NoControllerManager: true})
	cs := env.Clientset
	dyn, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	testenv.InstallCRD(t, dyn, filepath.Join("..", "..", "deploy", "crds", "fastpathbgppeeringpolicies.yaml"), bgp.PolicyGVR)
	speakerBin := agenttest.BuildCmd(t, "fastpath-bgp")
	id := make([]byte, 3)
	_, _ = rand.Read(id)
	tag := "fp-bgp" + hex.EncodeToString(id)
	router, client, nodes := buildFabric(t, tag)
	r := startBird(t, birdBin, router, nodes)

	for i, n := range nodes {
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: map[string]string{"bgp": "on"}},
			Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: n.ip.String()}}},
		}
		if i == 0 {
			node.Spec.PodCIDR, node.Spec.PodCIDRs = podCIDR1.String(), []string{podCIDR1.String()}
		}
		if _, err := cs.CoreV1().Nodes().Create(t.Context(), node, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	createPasswordSecret(t, cs)
	createPolicy(t, dyn)
	agenttest.CreateLBService(t, cs, lbIP, whoamiPort, nodes[0].Name)
	for _, n := range nodes {
		startSpeaker(t, speakerBin, env.KubeconfigPath, n)
	}

	r.waitRoute(t, lbIP.String()+"/32", nodes[0].ip, nodes[1].ip)
	r.waitRoute(t, podCIDR1.String(), nodes[0].ip)
	waitReach(t, client, nodes[0].Name, nodes[1].Name)
	t.Logf("BGP: router learned %s from %s and %s; external client reached it", lbIP, nodes[0].Name, nodes[1].Name)

	// externalTrafficPolicy Local: only node1 has the endpoint.
	svc, err := cs.CoreV1().Services("default").Get(t.Context(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	if _, err := cs.CoreV1().Services("default").Update(t.Context(), svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	r.waitRoute(t, lbIP.String()+"/32", nodes[0].ip)
	waitReach(t, client, nodes[0].Name)

	// Restart node1's speaker: the router keeps the route while it is down
	// (it is stale until the new speaker's End-of-RIB), so the client keeps
	// reaching the Service.
	agenttest.Stop(t, &nodes[0].Agent)
	down := time.Now()
	for time.Since(down) < 4*time.Second {
		if got := r.nextHops(t, lbIP.String()+"/32"); !slices.Equal(got, []netip.Addr{nodes[0].ip}) {
			t.Fatalf("%s after node1's speaker stopped: next hops %v, want still %s (graceful restart)\n%s", time.Since(down).Round(time.Millisecond), got, nodes[0].ip, r.protocols(t))
		}
		if name, err := nettopo.AskTCP(client, netip.AddrPortFrom(lbIP, whoamiPort).String(), 2*time.Second); err != nil || name != nodes[0].Name {
			t.Fatalf("client during the restart: %q, %v", name, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.Contains(r.show(t, "protocols", "all", "node1"), "Neighbor graceful restart active") {
		t.Fatalf("router not in graceful restart for node1:\n%s", r.show(t, "protocols", "all", "node1"))
	}
	startSpeaker(t, speakerBin, env.KubeconfigPath, nodes[0])
	r.waitEstablished(t, "node1")
	// The restart ends with the new speaker's End-of-RIB, long before the
	// 60 s restart time; BIRD then drops whatever was not re-advertised.
	deadline := time.Now().Add(20 * time.Second)
	for strings.Contains(r.show(t, "protocols", "all", "node1"), "Neighbor graceful restart active") {
		if time.Now().After(deadline) {
			t.Fatalf("graceful restart did not end (no End-of-RIB from the new speaker?):\n%s", r.show(t, "protocols", "all", "node1"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.waitRoute(t, lbIP.String()+"/32", nodes[0].ip)

	// A configured peer address sending garbage, and flapping.
	for i := range 20 {
		sendGarbage(t, router, nodes[0].ip, i)
	}
	if !running(nodes[0].Cmd.Process.Pid) {
		t.Fatalf("node1's speaker exited after garbage")
	}
	if got := r.nextHops(t, lbIP.String()+"/32"); !slices.Equal(got, []netip.Addr{nodes[0].ip}) {
		t.Fatalf("after garbage from %s: next hops %v, want %s\n%s", ghostIP, got, nodes[0].ip, r.protocols(t))
	}
	r.waitEstablished(t, "node1")
	waitReach(t, client, nodes[0].Name)

	// The endpoint stops being ready: no node may advertise; ready again:
	// node1 does.
	setReady(t, cs, false)
	r.waitRoute(t, lbIP.String()+"/32")
	setReady(t, cs, true)
	r.waitRoute(t, lbIP.String()+"/32", nodes[0].ip)

	// Deleting the Service withdraws the route.
	if err := cs.CoreV1().Services("default").Delete(t.Context(), "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	r.waitRoute(t, lbIP.String()+"/32")
	r.waitRoute(t, podCIDR1.String(), nodes[0].ip) // unrelated: stays
}

// buildFabric makes the underlay bridge, the router (forwarding between
// the underlay and the outside network), the client and two nodes, all
// removed at the end.
func buildFabric(t *testing.T, tag string) (router, client *nettopo.NS, nodes []*fabricNode) {
	t.Helper()
	newNS := func(name string) *nettopo.NS { return agenttest.NewNS(t, tag+"-"+name) }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	br := newNS("br")
	must(br.AddBridge("br0"))
	join := func(ns *nettopo.NS, port string, addrs ...netip.Addr) {
		must(nettopo.Veth(ns, "eth0", br, port))
		must(br.SetMaster(port, "br0"))
		for _, a := range addrs {
			must(ns.AddAddr("eth0", netip.PrefixFrom(a, underlay.Bits())))
		}
	}
	router = newNS("rtr")
	join(router, "p-rtr", routerIP, ghostIP)
	must(router.Sysctl("net/ipv4/ip_forward", "1"))
	client = newNS("client")
	must(nettopo.Veth(client, "eth0", router, "eth1"))
	must(client.AddAddr("eth0", netip.PrefixFrom(clientIP, outside.Bits())))
	must(router.AddAddr("eth1", netip.PrefixFrom(routerOut, outside.Bits())))
	must(client.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), routerOut, "eth0"))
	for i := 1; i <= 2; i++ {
		ns := newNS(fmt.Sprintf("node%d", i))
		n := &fabricNode{Agent: agenttest.Agent{Name: fmt.Sprintf("%s-node%d", tag, i), NS: ns}, ip: netip.AddrFrom4([4]byte{192, 168, 70, byte(10 + i)})}
		join(ns, fmt.Sprintf("p-node%d", i), n.ip)
		must(ns.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), routerIP, "eth0"))
		must(ns.AddAddr("lo", netip.PrefixFrom(lbIP, 32)))
		w, err := nettopo.StartWhoami(ns, n.Name, netip.AddrPortFrom(lbIP, whoamiPort).String())
		must(err)
		t.Cleanup(w.Close)
		nodes = append(nodes, n)
	}
	return router, client, nodes
}

// bird is a BIRD 2 daemon in the router's namespace.
type bird struct {
	sock string
}

// startBird writes the router's configuration into a temp dir and runs
// BIRD in the router's namespace until the test ends (killed by its PID).
func startBird(t *testing.T, bin string, router *nettopo.NS, nodes []*fabricNode) *bird {
	t.Helper()
	dir := t.TempDir()
	cfg := birdc.Config{RouterID: routerIP, ASN: routerASN}
	for i, n := range nodes {
		cfg.Neighbors = append(cfg.Neighbors, birdc.Neighbor{Name: fmt.Sprintf("node%d", i+1), Addr: n.ip, Port: listenPort, ASN: nodeASN, Password: bgpPassword})
	}
	conf := cfg.String()
	confPath := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	b := &bird{sock: filepath.Join(dir, "bird.ctl")}
	logPath := filepath.Join(dir, "bird.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "-f", "-c", confPath, "-s", b.sock, "-P", filepath.Join(dir, "bird.pid"))
	cmd.Stdout, cmd.Stderr = logf, logf
	// Forked from a thread kept in the router's namespace for BIRD's whole
	// life: Pdeathsig fires when that thread ends, which is after the kill
	// below, or if the test process dies first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started, release := make(chan error, 1), make(chan struct{})
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := netns.Set(router.Handle()); err != nil {
			started <- err
			return
		}
		started <- cmd.Start()
		<-release
	}()
	if err := <-started; err != nil {
		close(release)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		close(release)
		if t.Failed() {
			out, _ := os.ReadFile(logPath)
			t.Logf("bird.conf:\n%s\nbird log:\n%s", conf, out)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(b.sock); err == nil {
			return b
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(logPath)
			t.Fatalf("bird did not open its control socket:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (b *bird) show(t *testing.T, args ...string) string {
	t.Helper()
	out, err := birdc.Show(b.sock, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// nextHops are the next hops of the routes BIRD holds for prefix, sorted.
func (b *bird) nextHops(t *testing.T, prefix string) []netip.Addr {
	t.Helper()
	hops, err := birdc.NextHops(b.sock, netip.MustParsePrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	return hops
}

func (b *bird) protocols(t *testing.T) string { return b.show(t, "protocols") }

// waitRoute waits until BIRD's routes for prefix go exactly via hops.
func (b *bird) waitRoute(t *testing.T, prefix string, hops ...netip.Addr) {
	t.Helper()
	slices.SortFunc(hops, netip.Addr.Compare)
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := b.nextHops(t, prefix)
		if slices.Equal(got, hops) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("router: %s via %v, want via %v\n%s\n%s", prefix, got, hops, b.protocols(t), b.show(t, "route"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitEstablished waits until BIRD's protocol name is Established.
func (b *bird) waitEstablished(t *testing.T, name string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(b.show(t, "protocols", name), "Established") {
		if time.Now().After(deadline) {
			t.Fatalf("router: %s not Established\n%s", name, b.protocols(t))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitReach waits until the client, through the router, reaches the
// Service and gets only answers from names.
func waitReach(t *testing.T, client *nettopo.NS, names ...string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		name, err := nettopo.AskTCP(client, netip.AddrPortFrom(lbIP, whoamiPort).String(), time.Second)
		if err == nil && slices.Contains(names, name) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("client -> %s:%d: %q, %v; want one of %v", lbIP, whoamiPort, name, err, names)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sendGarbage connects from the ghost peer's address to node's speaker,
// sends bytes that are no BGP message (round i varies them) and closes.
func sendGarbage(t *testing.T, router *nettopo.NS, node netip.Addr, i int) {
	t.Helper()
	err := router.Do(func() error {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: ghostIP.AsSlice()}, Timeout: 2 * time.Second}
		c, err := d.Dial("tcp", netip.AddrPortFrom(node, uint16(listenPort)).String())
		if err != nil {
			return nil // refused while the speaker resets the peer: also fine
		}
		defer c.Close()
		junk := []byte(strings.Repeat("\xff", 16) + "\x00\x13\x01garbage")
		if i%2 == 1 {
			junk = []byte("GET / HTTP/1.0\r\n\r\n")
		}
		_ = c.SetDeadline(time.Now().Add(time.Second))
		_, _ = c.Write(junk)
		buf := make([]byte, 512)
		_, _ = c.Read(buf)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func createPolicy(t *testing.T, dyn dynamic.Interface) {
	t.Helper()
	p := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "fastpath.io/v1alpha1", "kind": "FastpathBGPPeeringPolicy",
		"metadata": map[string]any{"name": "rack"},
		"spec": map[string]any{
			"nodeSelector": map[string]any{"matchLabels": map[string]any{"bgp": "on"}},
			"localASN":     int64(nodeASN),
			"peers": []any{
				map[string]any{"address": routerIP.String(), "asn": int64(routerASN), "holdTimeSeconds": int64(9), "keepaliveTimeSeconds": int64(3),
					"gracefulRestart":   map[string]any{"restartTimeSeconds": int64(60)},
					"passwordSecretRef": map[string]any{"name": "bgp-router"}},
				map[string]any{"address": ghostIP.String(), "asn": int64(routerASN + 1)},
			},
			"advertise": map[string]any{"podCIDR": true},
		},
	}}
	if _, err := dyn.Resource(bgp.PolicyGVR).Create(t.Context(), p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// running reports whether pid is alive and not a zombie.
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, after, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(after, "Z") && !strings.HasPrefix(after, "X")
}

// startSpeaker runs n's fastpath-bgp.
func startSpeaker(t *testing.T, bin, kubeconfig string, n *fabricNode) {
	t.Helper()
	agenttest.StartBGP(t, bin, kubeconfig, &n.Agent, "--bgp-listen-port", fmt.Sprint(listenPort))
}

// setReady sets the ready condition of web's endpoint.
func setReady(t *testing.T, cs kubernetes.Interface, ready bool) {
	t.Helper()
	slice, err := cs.DiscoveryV1().EndpointSlices("default").Get(t.Context(), "web-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	slice.Endpoints[0].Conditions.Ready = &ready
	if _, err := cs.DiscoveryV1().EndpointSlices("default").Update(t.Context(), slice, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// createPasswordSecret stores bgpPassword in kube-system, the speakers'
// default --bgp-secret-namespace.
func createPasswordSecret(t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	ctx := t.Context()
	if _, err := cs.CoreV1().Namespaces().Get(ctx, "kube-system", metav1.GetOptions{}); err != nil {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kube-system"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "bgp-router", Namespace: "kube-system"},
		Data: map[string][]byte{bgp.DefaultPasswordKey: []byte(bgpPassword)}}
	if _, err := cs.CoreV1().Secrets("kube-system").Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}
