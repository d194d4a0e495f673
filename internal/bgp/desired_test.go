package bgp

import (
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/fastpath-net/fastpath/internal/loadbalancer"
)

func mustSelector(t *testing.T, s string) labels.Selector {
	t.Helper()
	sel, err := labels.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return sel
}

func lbService(ns, name string, ip string, states ...loadbalancer.BackendState) loadbalancer.Service {
	fe := loadbalancer.FrontendSpec{Frontend: loadbalancer.Frontend{
		L4Addr: loadbalancer.L4Addr{Addr: netip.MustParseAddr(ip), Port: 80, Proto: loadbalancer.TCP},
		Scope:  loadbalancer.ScopeExternal, Type: loadbalancer.LoadBalancer,
	}}
	for _, s := range states {
		fe.Backends = append(fe.Backends, loadbalancer.Backend{State: s})
	}
	return loadbalancer.Service{Name: loadbalancer.ServiceName{Namespace: ns, Name: name}, Frontends: []loadbalancer.FrontendSpec{fe}}
}

func prefixes(d Desired) []string {
	var out []string
	for p := range d.Prefixes {
		out = append(out, p.String())
	}
	slices.Sort(out)
	return out
}

// TestCompute: which policies apply to a node, which peers it gets (with
// the local ASN of their policy), and which prefixes it advertises.
func TestCompute(t *testing.T) {
	router := Peer{Address: netip.MustParseAddr("192.0.2.1"), ASN: 64500, HoldTime: DefaultHoldTime}
	other := Peer{Address: netip.MustParseAddr("192.0.2.2"), ASN: 64501, HoldTime: DefaultHoldTime}
	node := Node{Name: "n1", Labels: map[string]string{"rack": "a"}, RouterID: netip.MustParseAddr("10.0.0.1"),
		PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("fd00:1::/64")}}
	announce := loadbalancer.Announceable{}
	announce.Apply(true, []loadbalancer.Service{
		lbService("web", "front", "203.0.113.1", loadbalancer.Active),
		lbService("web", "v6", "2001:db8::1", loadbalancer.Active),
		lbService("db", "main", "203.0.113.2", loadbalancer.Active),
		// No ready backend (for ETP Local: none on this node): never.
		lbService("web", "idle", "203.0.113.3", loadbalancer.Terminating),
	}, nil)
	svcLabels := func(n loadbalancer.ServiceName) map[string]string {
		if n.Name == "front" {
			return map[string]string{"expose": "bgp"}
		}
		return nil
	}
	everything := labels.Everything()
	for _, tc := range []struct {
		name     string
		policies []*Policy
		node     Node
		asn      uint32
		peers    map[string]uint32 // address -> local ASN
		prefixes []string
		errs     []string
	}{
		{name: "no policy", node: node},
		{
			name:     "all LB IPs",
			policies: []*Policy{{Name: "p", NodeSelector: everything, ServiceSelector: everything, LocalASN: 64512, LoadBalancerIPs: true, Peers: []Peer{router}}},
			node:     node, asn: 64512, peers: map[string]uint32{"192.0.2.1": 64512},
			prefixes: []string{"2001:db8::1/128", "203.0.113.1/32", "203.0.113.2/32"},
		},
		{
			name:     "node not selected",
			policies: []*Policy{{Name: "p", NodeSelector: mustSelector(t, "rack=b"), ServiceSelector: everything, LocalASN: 64512, LoadBalancerIPs: true, Peers: []Peer{router}}},
			node:     node,
		},
		{
			name: "service selector by label and by namespace key",
			policies: []*Policy{
				{Name: "a", NodeSelector: everything, ServiceSelector: mustSelector(t, "expose=bgp"), LocalASN: 64512, LoadBalancerIPs: true, Peers: []Peer{router}},
				{Name: "b", NodeSelector: everything, ServiceSelector: mustSelector(t, ServiceNamespaceLabel+"=db"), LocalASN: 64513, LoadBalancerIPs: true, Peers: []Peer{other}},
			},
			node: node, asn: 64512, peers: map[string]uint32{"192.0.2.1": 64512, "192.0.2.2": 64513},
			prefixes: []string{"203.0.113.1/32", "203.0.113.2/32"},
		},
		{
			name:     "pod CIDRs only",
			policies: []*Policy{{Name: "p", NodeSelector: everything, ServiceSelector: everything, LocalASN: 64512, PodCIDR: true, Peers: []Peer{router}}},
			node:     node, asn: 64512, peers: map[string]uint32{"192.0.2.1": 64512},
			prefixes: []string{"10.244.1.0/24", "fd00:1::/64"},
		},
		{
			name: "a peer in two policies: the first by name wins, the second is reported",
			policies: []*Policy{
				{Name: "z", NodeSelector: everything, ServiceSelector: everything, LocalASN: 64999, Peers: []Peer{router}},
				{Name: "a", NodeSelector: everything, ServiceSelector: everything, LocalASN: 64512, Peers: []Peer{router}},
			},
			node: node, asn: 64512, peers: map[string]uint32{"192.0.2.1": 64512},
			errs: []string{"policy z: spec.peers[0].address: 192.0.2.1 is already a peer of policy a"},
		},
		{
			name:     "no IPv4 router ID",
			policies: []*Policy{{Name: "p", NodeSelector: everything, ServiceSelector: everything, LocalASN: 64512, LoadBalancerIPs: true, Peers: []Peer{router}}},
			node:     Node{Name: "n1"},
			errs:     []string{"no IPv4 InternalIP"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, errs := Compute(tc.policies, tc.node, announce, svcLabels)
			if d.ASN != tc.asn {
				t.Errorf("ASN %d, want %d", d.ASN, tc.asn)
			}
			if tc.asn != 0 && d.RouterID != tc.node.RouterID {
				t.Errorf("router ID %s", d.RouterID)
			}
			got := map[string]uint32{}
			for a, p := range d.Peers {
				got[a.String()] = p.LocalASN
			}
			if !maps.Equal(got, tc.peers) {
				t.Errorf("peers %v, want %v", got, tc.peers)
			}
			if p := prefixes(d); !slices.Equal(p, tc.prefixes) {
				t.Errorf("prefixes %v, want %v", p, tc.prefixes)
			}
			if len(errs) != len(tc.errs) {
				t.Fatalf("errors %v, want %v", errs, tc.errs)
			}
			for i, err := range errs {
				if !strings.Contains(err.Error(), tc.errs[i]) {
					t.Errorf("error %q, want it to contain %q", err, tc.errs[i])
				}
			}
		})
	}
}

// TestParsePolicy: defaults, and errors naming the field for what the CRD's
// rules would refuse.
func TestParsePolicy(t *testing.T) {
	obj := func(spec map[string]any) *unstructured.Unstructured {
		return &unstructured.Unstructured{Object: map[string]any{"metadata": map[string]any{"name": "p"}, "spec": spec}}
	}
	peer := func(extra map[string]any) []any {
		p := map[string]any{"address": "192.0.2.1", "asn": int64(64500)}
		maps.Copy(p, extra)
		return []any{p}
	}
	p, err := ParsePolicy(obj(map[string]any{"localASN": int64(4200000000), "peers": peer(map[string]any{
		"holdTimeSeconds": int64(30), "passwordSecretRef": map[string]any{"name": "s"}})}))
	if err != nil {
		t.Fatal(err)
	}
	got := p.Peers[0]
	if p.LocalASN != 4200000000 || !p.LoadBalancerIPs || p.PodCIDR || got.HoldTime != 30*time.Second || got.Keepalive != 10*time.Second ||
		!got.GracefulRestart || got.RestartTime != DefaultRestartTime || got.PasswordSecret != "s" || got.PasswordKey != DefaultPasswordKey {
		t.Errorf("parsed %+v, peer %+v", p, got)
	}
	for _, tc := range []struct {
		spec map[string]any
		want string
	}{
		{map[string]any{"localASN": int64(0), "peers": peer(nil)}, "spec.localASN"},
		{map[string]any{"localASN": int64(65535), "peers": peer(nil)}, "spec.localASN"},
		{map[string]any{"localASN": int64(64512)}, "spec.peers"},
		{map[string]any{"localASN": int64(64512), "peers": peer(map[string]any{"address": "fe80::1"})}, "spec.peers[0].address"},
		{map[string]any{"localASN": int64(64512), "peers": peer(map[string]any{"address": "bogus"})}, "spec.peers[0].address"},
		{map[string]any{"localASN": int64(64512), "peers": peer(map[string]any{"asn": int64(23456)})}, "spec.peers[0].asn"},
		{map[string]any{"localASN": int64(64512), "peers": peer(map[string]any{"keepaliveTimeSeconds": int64(31)})}, "spec.peers[0].keepaliveTimeSeconds"},
		{map[string]any{"localASN": int64(64512), "peers": append(peer(nil), peer(nil)...)}, "spec.peers[1].address"},
		{map[string]any{"localASN": int64(64512), "peers": peer(nil), "nodeSelector": map[string]any{
			"matchExpressions": []any{map[string]any{"key": "a", "operator": "In"}}}}, "spec.nodeSelector"},
		{map[string]any{"localASN": "many", "peers": peer(nil)}, "spec"},
	} {
		_, err := ParsePolicy(obj(tc.spec))
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error naming %s", tc.spec, err, tc.want)
		}
	}
}
