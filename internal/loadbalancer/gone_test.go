package loadbalancer_test

import (
	"net/netip"
	"slices"
	"testing"

	lb "github.com/fastpath-net/fastpath/internal/loadbalancer"
)

func udpService(addr string, ext []string, internal []string) lb.Service {
	backends := func(list []string) []lb.Backend {
		var out []lb.Backend
		for _, a := range list {
			out = append(out, lb.Backend{L4Addr: lb.L4Addr{Addr: netip.MustParseAddr(a), Port: 5353, Proto: lb.UDP}})
		}
		return out
	}
	fe := lb.L4Addr{Addr: netip.MustParseAddr(addr), Port: 53, Proto: lb.UDP}
	svc := lb.Service{Name: lb.ServiceName{Namespace: "demo", Name: "dns"}}
	svc.Frontends = append(svc.Frontends, lb.FrontendSpec{Frontend: lb.Frontend{L4Addr: fe}, Backends: backends(ext)})
	if internal != nil {
		svc.Frontends = append(svc.Frontends, lb.FrontendSpec{Frontend: lb.Frontend{L4Addr: fe, Scope: lb.ScopeInternal}, Backends: backends(internal)})
	}
	return svc
}

func gone(fe, be string) lb.GoneBackend {
	return lb.GoneBackend{Frontend: netip.MustParseAddrPort(fe), Backend: netip.MustParseAddrPort(be)}
}

// TakeGoneUDP names the UDP backends that left a frontend since the last
// call: not those still in the frontend's other scope, nor TCP ones, and
// every backend of a deleted frontend.
func TestTakeGoneUDP(t *testing.T) {
	f := newFakes(1 << 10)
	tab := lb.NewTable()
	r := lb.NewReconciler(f.maps, lb.ReconcilerOptions{TrackGoneUDP: true})
	mustUpsert(t, tab, udpService("10.96.0.53", []string{"10.0.1.1", "10.0.1.2", "10.0.1.3"}, []string{"10.0.1.1", "10.0.1.2", "10.0.1.3"}))
	mustUpsert(t, tab, svcN(1, 2)) // TCP
	mustSync(t, r, tab)
	if g := r.TakeGoneUDP(); len(g) != 0 {
		t.Fatalf("first sync: gone %v", g)
	}

	// 10.0.1.2 leaves both scopes; 10.0.1.3 only the external one.
	mustUpsert(t, tab, udpService("10.96.0.53", []string{"10.0.1.1"}, []string{"10.0.1.1", "10.0.1.3"}))
	mustUpsert(t, tab, svcN(1, 1))
	mustSync(t, r, tab)
	if got, want := r.TakeGoneUDP(), []lb.GoneBackend{gone("10.96.0.53:53", "10.0.1.2:5353")}; !slices.Equal(got, want) {
		t.Errorf("gone %v, want %v", got, want)
	}
	if g := r.TakeGoneUDP(); len(g) != 0 {
		t.Errorf("taken twice: %v", g)
	}

	tab.Delete(lb.ServiceName{Namespace: "demo", Name: "dns"})
	mustSync(t, r, tab)
	got := r.TakeGoneUDP()
	slices.SortFunc(got, func(a, b lb.GoneBackend) int { return a.Backend.Compare(b.Backend) })
	if want := []lb.GoneBackend{gone("10.96.0.53:53", "10.0.1.1:5353"), gone("10.96.0.53:53", "10.0.1.3:5353")}; !slices.Equal(got, want) {
		t.Errorf("after delete: gone %v, want %v", got, want)
	}
}
