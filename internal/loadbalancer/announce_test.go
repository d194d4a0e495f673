package loadbalancer

import (
	"net/netip"
	"testing"
)

// TestAnnounceable: only LoadBalancer frontends with an active backend count.
func TestEligibility(t *testing.T) {
	lbIP := netip.MustParseAddr("192.168.50.200")
	other := netip.MustParseAddr("192.168.50.201")
	fe := func(ip netip.Addr, typ FrontendType, scope Scope, states ...BackendState) FrontendSpec {
		f := FrontendSpec{Frontend: Frontend{L4Addr: L4Addr{Addr: ip, Port: 80, Proto: TCP}, Scope: scope, Type: typ}}
		for _, s := range states {
			f.Backends = append(f.Backends, Backend{State: s})
		}
		return f
	}
	a := ServiceName{Namespace: "ns", Name: "a"}
	b := ServiceName{Namespace: "ns", Name: "b"}
	e := Announceable{}
	e.Apply(true, []Service{
		{Name: a, Frontends: []FrontendSpec{
			fe(lbIP, LoadBalancer, ScopeExternal, Terminating, Active),
			fe(netip.MustParseAddr("10.96.0.1"), ClusterIP, ScopeExternal, Active),
			fe(netip.MustParseAddr("192.168.50.9"), ExternalIP, ScopeExternal, Active),
		}},
		// Local policy without a ready local endpoint: only terminating.
		{Name: b, Frontends: []FrontendSpec{fe(other, LoadBalancer, ScopeExternal, Terminating)}},
	}, nil)
	if got := e.IPs(netip.Addr.Is4); len(got) != 1 || !got[lbIP] {
		t.Fatalf("eligible %v, want only %s", got, lbIP)
	}
	// b gets a ready endpoint; a goes away.
	e.Apply(false, []Service{{Name: b, Frontends: []FrontendSpec{fe(other, LoadBalancer, ScopeExternal, Active)}}},
		[]ServiceName{a})
	if got := e.IPs(netip.Addr.Is4); len(got) != 1 || !got[other] {
		t.Fatalf("eligible %v, want only %s", got, other)
	}
	e.Apply(true, nil, nil)
	if got := e.IPs(netip.Addr.Is4); len(got) != 0 {
		t.Fatalf("after an empty full state: eligible %v", got)
	}
}
