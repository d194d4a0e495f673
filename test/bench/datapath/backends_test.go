package main

import (
	"net/netip"
	"testing"
)

// TestBackendsSpread: at every N the services' backends cover every backend
// host, a service never names an address twice (the services file refuses
// that), and every service has as many backends, so the direct client's
// targets weigh each backend as the load balancer does.
func TestBackendsSpread(t *testing.T) {
	var bes []netip.AddrPort
	for p := 0; p < numBackendPorts; p++ {
		for h := 1; h <= numBackendHosts; h++ {
			bes = append(bes, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(h), 2}), uint16(firstPort+p)))
		}
	}
	for _, n := range []int{1, 3, 10, 31, 32, 33, 1000} {
		hosts := map[netip.Addr]bool{}
		per := len(backendsOf(bes, n, 0))
		for i := 0; i < n; i++ {
			got := backendsOf(bes, n, i)
			if len(got) != per {
				t.Fatalf("N=%d: service %d has %d backends, service 0 has %d", n, i, len(got), per)
			}
			seen := map[netip.Addr]bool{}
			for _, be := range got {
				if seen[be.Addr()] {
					t.Fatalf("N=%d: service %d names %s twice: %v", n, i, be.Addr(), got)
				}
				seen[be.Addr()], hosts[be.Addr()] = true, true
			}
		}
		if len(hosts) != numBackendHosts {
			t.Errorf("N=%d: the services reach %d backend hosts, want all %d", n, len(hosts), numBackendHosts)
		}
		if want := len(directTargets(n, bes)); want != n*per {
			t.Errorf("N=%d: %d direct targets, want %d", n, want, n*per)
		}
	}
}
