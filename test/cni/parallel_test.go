package cni

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

// TestParallelAddDel: 20 pods attached 10 at a time, as a runtime starting
// a Deployment does, get distinct addresses and endpoint IDs; detached 10
// at a time, they leave nothing.
func TestParallelAddDel(t *testing.T) {
	n := newNode(t, "10.244.40.0/24")
	n.startAgent()
	var rts []*libcni.RuntimeConf
	for i := range 20 {
		rts = append(rts, rt(n.newPod(fmt.Sprint("p", i)), fmt.Sprintf("c-%s-%d", n.id, i)))
	}
	ips := make([]netip.Addr, len(rts))
	parallel(t, 10, len(rts), func(i int) error {
		res, err := n.add(rts[i])
		if err == nil {
			ips[i], _ = netip.AddrFromSlice(res.IPs[0].Address.IP.To4())
		}
		return err
	})
	seen := map[netip.Addr]bool{}
	for _, ip := range ips {
		if seen[ip] || !ip.IsValid() {
			t.Fatalf("addresses %v: want 20 distinct ones", ips)
		}
		seen[ip] = true
	}
	ids := map[uint16]bool{}
	for _, ep := range n.endpoints(t) {
		ids[ep.ID] = true
	}
	if len(ids) != 20 {
		t.Fatalf("%d distinct endpoint IDs, want 20", len(ids))
	}
	parallel(t, 10, len(rts), func(i int) error { return n.check(rts[i]) })
	parallel(t, 10, len(rts), func(i int) error { return n.del(rts[i]) })
	n.assertClean()
}

// parallel runs fn(0..count-1), width at a time, and fails on any error.
func parallel(t *testing.T, width, count int, fn func(int) error) {
	t.Helper()
	next := make(chan int, count)
	for i := range count {
		next <- i
	}
	close(next)
	errs := make(chan error, count)
	var wg sync.WaitGroup
	for range width {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(i); err != nil {
					errs <- fmt.Errorf("#%d: %w", i, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
