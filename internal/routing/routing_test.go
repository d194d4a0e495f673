package routing

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfmap"
	"github.com/fastpath-net/fastpath/internal/datapath/bpfobj"
	"github.com/fastpath-net/fastpath/internal/datapath/layoutcheck"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func ip(s string) netip.Addr    { return netip.MustParseAddr(s) }

func TestDesiredSkipsSelfAndUnroutableNodes(t *testing.T) {
	nodes := []Node{
		{Name: "a", IP: ip("192.168.1.1"), PodCIDRs: []netip.Prefix{pfx("10.244.1.0/24")}},
		{Name: "b", IP: ip("192.168.1.2"), PodCIDRs: []netip.Prefix{pfx("10.244.2.0/24"), pfx("10.245.2.7/24")}},
		{Name: "c", PodCIDRs: []netip.Prefix{pfx("10.244.3.0/24")}}, // no InternalIP yet
		{Name: "d", IP: ip("192.168.1.4")},                          // no pod CIDR yet
	}
	got := Desired(nodes, "a")
	want := []Route{
		{Dst: pfx("10.244.2.0/24"), Node: ip("192.168.1.2")},
		{Dst: pfx("10.245.2.0/24"), Node: ip("192.168.1.2")},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Desired = %v, want %v", got, want)
	}
}

func TestDesiredClaimedTwiceGoesToFirstName(t *testing.T) {
	for _, order := range [][]Node{
		{{Name: "z", IP: ip("192.168.1.26"), PodCIDRs: []netip.Prefix{pfx("10.244.9.0/24")}}, {Name: "m", IP: ip("192.168.1.13"), PodCIDRs: []netip.Prefix{pfx("10.244.9.0/24")}}},
		{{Name: "m", IP: ip("192.168.1.13"), PodCIDRs: []netip.Prefix{pfx("10.244.9.0/24")}}, {Name: "z", IP: ip("192.168.1.26"), PodCIDRs: []netip.Prefix{pfx("10.244.9.0/24")}}},
	} {
		got := Desired(order, "self")
		if len(got) != 1 || got[0].Node != ip("192.168.1.13") {
			t.Fatalf("Desired = %v, want the CIDR via m (192.168.1.13) in any order", got)
		}
	}
}

func TestNodeFromObject(t *testing.T) {
	o := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "n1"},
		Spec:       corev1.NodeSpec{PodCIDR: "10.244.1.0/24", PodCIDRs: []string{"10.244.1.0/24", "fd00:10:244:1::/64"}},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeHostName, Address: "n1"},
			{Type: corev1.NodeInternalIP, Address: "fd00::1"},
			{Type: corev1.NodeInternalIP, Address: "192.168.1.1"},
		}},
	}
	n, err := NodeFromObject(o)
	if err != nil {
		t.Fatal(err)
	}
	want := Node{Name: "n1", IP: ip("192.168.1.1"), PodCIDRs: []netip.Prefix{pfx("10.244.1.0/24")}}
	if !reflect.DeepEqual(n, want) {
		t.Fatalf("NodeFromObject = %+v, want %+v", n, want)
	}
}

func TestNodeFromObjectNamesBadField(t *testing.T) {
	for field, o := range map[string]*corev1.Node{
		"spec.podCIDRs[1]": {ObjectMeta: metav1.ObjectMeta{Name: "n"}, Spec: corev1.NodeSpec{PodCIDRs: []string{"10.0.0.0/24", "10.0.1.0"}}},
		"spec.podCIDR":     {ObjectMeta: metav1.ObjectMeta{Name: "n"}, Spec: corev1.NodeSpec{PodCIDR: "x"}},
		"status.addresses[0]": {ObjectMeta: metav1.ObjectMeta{Name: "n"}, Status: corev1.NodeStatus{
			Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "300.1.1.1"}}}},
	} {
		if _, err := NodeFromObject(o); err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("error %v, want one naming %s", err, field)
		}
	}
}

func TestRouteDiff(t *testing.T) {
	have := map[netip.Prefix]nextHop{
		pfx("10.244.1.0/24"): {gw: ip("192.168.1.1")},
		pfx("10.244.2.0/24"): {gw: ip("192.168.1.2")},
		pfx("10.244.3.0/24"): {dev: 7},
	}
	want := map[netip.Prefix]nextHop{
		pfx("10.244.1.0/24"): {gw: ip("192.168.1.1")}, // unchanged
		pfx("10.244.2.0/24"): {dev: 7},                // native -> vxlan
		pfx("10.244.4.0/24"): {gw: ip("192.168.1.4")}, // new
	}
	up, del := routeDiff(have, want)
	if len(up) != 2 || len(del) != 1 || del[0] != pfx("10.244.3.0/24") {
		t.Fatalf("upsert %v delete %v, want 2 upserts and 10.244.3.0/24 deleted", up, del)
	}
}

func TestSyncTunnelMapIsIncremental(t *testing.T) {
	m := bpfmap.NewFake[TunnelKey, TunnelEndpoint]("fp_tunnel_map", 16)
	routes := []Route{{Dst: pfx("10.244.2.0/24"), Node: ip("192.168.1.2")}, {Dst: pfx("10.244.3.0/24"), Node: ip("192.168.1.3")}}
	if err := syncTunnelMap(m, routes); err != nil {
		t.Fatal(err)
	}
	_, _ = m.Ops()
	routes[1].Node = ip("192.168.1.33")
	if err := syncTunnelMap(m, routes[1:]); err != nil {
		t.Fatal(err)
	}
	w1, d1 := m.Ops()
	if w1 != 1 || d1 != 1 {
		t.Fatalf("second sync wrote %d and deleted %d entries, want 1 and 1", w1, d1)
	}
	all, _ := m.All()
	v, ok := all[tunnelKey(pfx("10.244.3.0/24"))]
	if len(all) != 1 || !ok || v.Node.IP() != ip("192.168.1.33") {
		t.Fatalf("map = %v", all)
	}
	if k := tunnelKey(pfx("10.244.3.0/24")); k.Prefixlen != 96+24 {
		t.Fatalf("IPv4 /24 key has prefixlen %d, want 120", k.Prefixlen)
	}
}

func TestTunnelLayoutMatchesObject(t *testing.T) {
	spec, err := bpfobj.LoadTctunnel()
	if err != nil {
		t.Fatal(err)
	}
	m := spec.Maps["fp_tunnel_map"]
	tclb, err := bpfobj.LoadTclb()
	if err != nil {
		t.Fatal(err)
	}
	layoutcheck.Struct(t, "tc_tunnel", m.Key, reflect.TypeFor[TunnelKey]())
	layoutcheck.Struct(t, "tc_lb", tclb.Maps["fp_no_masq"].Key, reflect.TypeFor[TunnelKey]())
	layoutcheck.Struct(t, "tc_tunnel", m.Value, reflect.TypeFor[TunnelEndpoint]())
}
