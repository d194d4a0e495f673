package loadbalancer_test

import (
	"net/netip"
	"testing"

	lb "github.com/fastpath-net/fastpath/internal/loadbalancer"
)

func TestFrontendOwnerNamesTheService(t *testing.T) {
	tab := lb.NewTable()
	if err := tab.Upsert(svcN(3, 1)); err != nil {
		t.Fatal(err)
	}
	vip := netip.MustParseAddr("10.96.0.3")
	if n, ok := tab.FrontendOwner(vip, 80, uint8(lb.TCP)); !ok || n.String() != "bench/svc-3" {
		t.Fatalf("owner of %s:80/TCP = %v, %v; want bench/svc-3", vip, n, ok)
	}
	if _, ok := tab.FrontendOwner(vip, 81, uint8(lb.TCP)); ok {
		t.Fatal("a port no service has has an owner")
	}
	tab.Delete(lb.ServiceName{Namespace: "bench", Name: "svc-3"})
	if _, ok := tab.FrontendOwner(vip, 80, uint8(lb.TCP)); ok {
		t.Fatal("a deleted service still owns its frontend")
	}
}
