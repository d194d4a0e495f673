package l2announce

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/fastpath-net/fastpath/internal/agenttest"
	"github.com/fastpath-net/fastpath/internal/nettopo"
	"github.com/fastpath-net/fastpath/internal/testenv"
	"github.com/fastpath-net/fastpath/internal/testpriv"
)

// The segment of TestFailover: two nodes and an external client on one
// bridge. The LoadBalancer IP is in the segment's subnet, so the client
// finds it by ARP alone: no route and no neighbour entry is planted.
var (
	segment     = netip.MustParsePrefix("192.168.60.0/24")
	segClientIP = netip.MustParseAddr("192.168.60.100")
	observerIP  = netip.MustParseAddr("192.168.60.101")
	segLBIP     = netip.MustParseAddr("192.168.60.200")
)

const (
	testLease  = 3 * time.Second
	whoamiPort = 8080
)

type segNode struct {
	agenttest.Agent // Name: the Node name, also what its whoami answers
	mac             net.HardwareAddr
}

// TestFailover runs the real fastpath-agent on two nodes of an fp- segment
// with a real apiserver. Each node serves the LoadBalancer IP (a whoami on
// it, bound to lo: the stand-in for the datapath, which serves any IP the
// node receives); the kernel never answers ARP for it (arp_ignore=1), so
// only the announcer can make it reachable. The client must reach it
// through the elected node, with exactly one node answering ARP; after the
// holder's agent is killed (SIGKILL: no release of its Lease), through the
// other node within the Lease duration plus three retry periods.
func TestFailover(t *testing.T) {
	testpriv.Require(t)
	env := testenv.StartForTest(t, testenv.Options{NoControllerManager: true})
	cs := env.Clientset
	agentBin := agenttest.Build(t)
	id := make([]byte, 3)
	_, _ = rand.Read(id)
	tag := "fp-l2" + hex.EncodeToString(id)
	client, observer, nodes := buildSegment(t, tag)

	for _, n := range nodes {
		createNode(t, cs, n)
	}
	agenttest.CreateLBService(t, cs, segLBIP, whoamiPort, nodes[0].Name)
	for _, n := range nodes {
		startAgent(t, agentBin, env.KubeconfigPath, n)
	}

	probe := openProbe(t, observer)
	holder := waitAnnouncer(t, cs, probe, client, nodes, nil, 20*time.Second)
	t.Logf("%s announces %s", holder.Name, segLBIP)
	if out, _ := client.Netlink().NeighList(0, 0); len(out) > 0 {
		for _, nb := range out {
			if nb.State&0x80 != 0 { // NUD_PERMANENT
				t.Fatalf("a static neighbour entry on the client: %+v", nb)
			}
		}
	}

	// Kill the holder's agent: its Lease is not released and runs out.
	killed := time.Now()
	agenttest.Kill(t, &holder.Agent)
	next := waitAnnouncer(t, cs, probe, client, nodes, holder, 2*testLease+5*time.Second)
	failover := time.Since(killed)
	t.Logf("failover from %s to %s: %.1fs after the kill (Lease duration %s, retry period %s)",
		holder.Name, next.Name, failover.Seconds(), testLease, Config{LeaseDuration: testLease}.retryPeriod())
	// The other node sees the last renewal up to one jittered retry
	// period late, and tries again up to one later.
	limit := testLease + 3*(Config{LeaseDuration: testLease}).retryPeriod() + time.Second
	if failover > limit {
		t.Errorf("failover took %s, want at most %s (Lease duration plus three retry periods and 1s of probing)", failover, limit)
	}

	// A stopped agent (SIGTERM) releases its Lease: the restarted first
	// node takes over without waiting for it to run out.
	startAgent(t, agentBin, env.KubeconfigPath, holder)
	agenttest.Stop(t, &next.Agent)
	first := waitAnnouncer(t, cs, probe, client, nodes, next, testLease)

	// externalTrafficPolicy Local with the only endpoint on the other
	// node: the holder is no longer eligible, lets go, and the node with
	// the endpoint announces.
	startAgent(t, agentBin, env.KubeconfigPath, next)
	makeLocal(t, cs, next.Name)
	waitAnnouncer(t, cs, probe, client, nodes, first, testLease)
}

// makeLocal switches the Service to externalTrafficPolicy Local and moves
// its endpoint to node.
func makeLocal(t *testing.T, cs kubernetes.Interface, node string) {
	t.Helper()
	ctx := t.Context()
	svc, err := cs.CoreV1().Services("default").Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	if _, err := cs.CoreV1().Services("default").Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	slice, err := cs.DiscoveryV1().EndpointSlices("default").Get(ctx, "web-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	slice.Endpoints[0].NodeName = ptr.To(node)
	if _, err := cs.DiscoveryV1().EndpointSlices("default").Update(ctx, slice, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// waitAnnouncer waits until exactly one node, not skip, answers ARP for the
// LB IP, holds its Lease, and the client reaches the IP through it. Every
// probe on the way must see at most one answer.
func waitAnnouncer(t *testing.T, cs kubernetes.Interface, p *arpSocket, client *nettopo.NS, nodes []*segNode, skip *segNode, within time.Duration) *segNode {
	t.Helper()
	var last string
	for deadline := time.Now().Add(within); time.Now().Before(deadline); {
		macs := askARP(t, p, segLBIP)
		if len(macs) > 1 {
			t.Fatalf("%d nodes answer ARP for %s at once: %v", len(macs), segLBIP, macs)
		}
		if len(macs) == 0 {
			last = "no ARP answer"
			continue
		}
		n := nodeByMAC(nodes, macs[0])
		switch {
		case n == nil:
			t.Fatalf("ARP answer from unknown MAC %s", macs[0])
		case n == skip:
			last = "the old holder still answers"
			continue
		}
		lease, err := cs.CoordinationV1().Leases("kube-system").Get(t.Context(), LeaseName(segLBIP), metav1.GetOptions{})
		if err != nil || ptr.Deref(lease.Spec.HolderIdentity, "") != n.Name {
			last = fmt.Sprintf("%s answers but the Lease says %v (%v)", n.Name, lease, err)
			continue
		}
		got, err := nettopo.AskTCP(client, netip.AddrPortFrom(segLBIP, whoamiPort).String(), time.Second)
		if err != nil || got != n.Name {
			last = fmt.Sprintf("%s answers ARP, the client reached %q (%v)", n.Name, got, err)
			continue
		}
		return n
	}
	t.Fatalf("no single announcer within %s: %s", within, last)
	return nil
}

func nodeByMAC(nodes []*segNode, mac net.HardwareAddr) *segNode {
	for _, n := range nodes {
		if slices.Equal(n.mac, mac) {
			return n
		}
	}
	return nil
}

// openProbe opens an ARP socket on the observer, to count who answers.
// The observer is not the client: answers to the probes would update the
// client's neighbour entry, and do the gratuitous ARP's job.
func openProbe(t *testing.T, observer *nettopo.NS) *arpSocket {
	t.Helper()
	s, err := openARPSocket(observer.Path(), "eth0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.close() })
	return s
}

// askARP broadcasts a request for ip and returns the distinct MACs that
// answer within 200ms.
func askARP(t *testing.T, s *arpSocket, ip netip.Addr) []net.HardwareAddr {
	t.Helper()
	if err := s.write(buildRequest(make([]byte, frameLen), s.mac, observerIP, ip)); err != nil {
		t.Fatal(err)
	}
	var macs []net.HardwareAddr
	buf := make([]byte, 1514)
	_ = s.f.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	for {
		n, err := s.read(buf)
		if err != nil {
			return macs
		}
		if mac, from, ok := parseReply(buf[:n]); ok && from == ip && !slices.ContainsFunc(macs, func(m net.HardwareAddr) bool { return slices.Equal(m, mac) }) {
			macs = append(macs, slices.Clone(mac))
		}
	}
}

// buildSegment makes the bridge, the client, an observer and two nodes, all
// removed at the end.
func buildSegment(t *testing.T, tag string) (client, observer *nettopo.NS, nodes []*segNode) {
	t.Helper()
	newNS := func(name string) *nettopo.NS { return agenttest.NewNS(t, tag+"-"+name) }
	br := newNS("br")
	if err := br.AddBridge("br0"); err != nil {
		t.Fatal(err)
	}
	join := func(ns *nettopo.NS, port string, addr netip.Addr) {
		if err := nettopo.Veth(ns, "eth0", br, port); err != nil {
			t.Fatal(err)
		}
		if err := br.SetMaster(port, "br0"); err != nil {
			t.Fatal(err)
		}
		if err := ns.AddAddr("eth0", netip.PrefixFrom(addr, segment.Bits())); err != nil {
			t.Fatal(err)
		}
	}
	client = newNS("client")
	join(client, "p-client", segClientIP)
	observer = newNS("obs")
	join(observer, "p-obs", observerIP)
	for i := 1; i <= 2; i++ {
		ns := newNS(fmt.Sprintf("node%d", i))
		join(ns, fmt.Sprintf("p-node%d", i), netip.AddrFrom4([4]byte{192, 168, 60, byte(10 + i)}))
		for _, key := range []string{"net/ipv4/conf/all/arp_ignore", "net/ipv4/conf/eth0/arp_ignore"} {
			if err := ns.Sysctl(key, "1"); err != nil {
				t.Fatal(err)
			}
		}
		if err := ns.AddAddr("lo", netip.PrefixFrom(segLBIP, 32)); err != nil {
			t.Fatal(err)
		}
		mac, err := ns.HardwareAddr("eth0")
		if err != nil {
			t.Fatal(err)
		}
		n := &segNode{Agent: agenttest.Agent{Name: fmt.Sprintf("%s-node%d", tag, i), NS: ns}, mac: mac}
		w, err := nettopo.StartWhoami(ns, n.Name, netip.AddrPortFrom(segLBIP, whoamiPort).String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(w.Close)
		nodes = append(nodes, n)
	}
	return client, observer, nodes
}

func createNode(t *testing.T, cs kubernetes.Interface, n *segNode) {
	t.Helper()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name}}
	if _, err := cs.CoreV1().Nodes().Create(t.Context(), node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// startAgent runs n's agent announcing on eth0 with the test's short Lease.
func startAgent(t *testing.T, bin, kubeconfig string, n *segNode) {
	t.Helper()
	agenttest.Start(t, bin, kubeconfig, &n.Agent, "--l2-announce-interfaces", "eth0", "--l2-lease-duration", testLease.String())
}
