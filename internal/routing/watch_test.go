package routing

import (
	"context"
	"net/netip"
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/fastpath-net/fastpath/internal/nettopo"
	"github.com/fastpath-net/fastpath/internal/testenv"
)

// TestRunFollowsNodeObjects: node 1's router learns node 2 from its Node
// object on a real apiserver, and follows a node joining and Nodes'
// deletion.
func TestRunFollowsNodeObjects(t *testing.T) {
	tn := newTwoNodes(t, ModeNative)
	env := testenv.StartForTest(t, testenv.Options{NoControllerManager: true})
	cs := env.Clientset
	for i, ns := range tn.Nodes {
		createNode(t, cs, ns.Name, nettopo.PairNodeIP(i), nettopo.PairPodCIDR(i).String())
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- tn.routers[0].Run(ctx, cs) }()
	t.Cleanup(func() { cancel(); <-done })

	nl := routeTable{nl: tn.Nodes[0].Netlink()}
	gw := nextHop{gw: nettopo.PairNodeIP(1)}
	waitRoutes(t, nl, map[netip.Prefix]nextHop{nettopo.PairPodCIDR(1): gw})
	must(t, tn.routers[1].Sync(tn.desired)) // the way back, without a watch of its own
	tn.podTalk(t)

	// A third node joins: a route via its address, which is on the
	// underlay (no namespace answers there; routes need no answer).
	third := nextHop{gw: netip.MustParseAddr("192.168.77.3")}
	createNode(t, cs, "third", third.gw, "10.244.3.0/24")
	waitRoutes(t, nl, map[netip.Prefix]nextHop{nettopo.PairPodCIDR(1): gw, netip.MustParsePrefix("10.244.3.0/24"): third})

	for _, name := range []string{tn.Nodes[1].Name, "third"} {
		must(t, cs.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{}))
	}
	waitRoutes(t, nl, map[netip.Prefix]nextHop{})
}

func createNode(t *testing.T, cs kubernetes.Interface, name string, ip netip.Addr, cidr string) {
	t.Helper()
	n, err := cs.CoreV1().Nodes().Create(t.Context(), &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.NodeSpec{PodCIDR: cidr, PodCIDRs: []string{cidr}},
	}, metav1.CreateOptions{})
	must(t, err)
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip.String()}}
	_, err = cs.CoreV1().Nodes().UpdateStatus(t.Context(), n, metav1.UpdateOptions{})
	must(t, err)
}

func waitRoutes(t *testing.T, tbl routeTable, want map[netip.Prefix]nextHop) {
	t.Helper()
	var have map[netip.Prefix]nextHop
	for range 100 {
		var err error
		have, err = tbl.list()
		must(t, err)
		if reflect.DeepEqual(have, want) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("routes %v, want %v", have, want)
}
