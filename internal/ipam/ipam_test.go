package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func owner(id string) Owner { return Owner{Network: "net", ContainerID: id, IfName: "eth0"} }

func open(t *testing.T, dir string, ranges ...string) *Allocator {
	t.Helper()
	a, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	var ps []netip.Prefix
	for _, r := range ranges {
		ps = append(ps, netip.MustParsePrefix(r))
	}
	if err := a.SetRanges(ps); err != nil {
		t.Fatal(err)
	}
	return a
}

func TestAllocateSkipsNetworkAndBroadcast(t *testing.T) {
	a := open(t, t.TempDir(), "10.0.0.0/30")
	x, err := a.Allocate(owner("x"))
	if err != nil || x[0].String() != "10.0.0.1" {
		t.Fatalf("first: %v %v", x, err)
	}
	y, err := a.Allocate(owner("y"))
	if err != nil || y[0].String() != "10.0.0.2" {
		t.Fatalf("second: %v %v", y, err)
	}
	_, err = a.Allocate(owner("z"))
	if !errors.Is(err, ErrExhausted) {
		t.Fatalf("third: %v, want ErrExhausted", err)
	}
}

func TestAllocateIsIdempotentPerOwner(t *testing.T) {
	a := open(t, t.TempDir(), "10.0.0.0/24")
	x1, _ := a.Allocate(owner("x"))
	x2, _ := a.Allocate(owner("x"))
	if x1[0] != x2[0] || len(a.Leases()) != 1 {
		t.Fatalf("a retried ADD got %v then %v; leases %v", x1, x2, a.Leases())
	}
}

// TestReleasedAddressReusedLast: next-fit, so a freed address waits until
// the range wraps around.
func TestReleasedAddressReusedLast(t *testing.T) {
	a := open(t, t.TempDir(), "10.0.0.0/29") // .1-.6
	x, _ := a.Allocate(owner("x"))
	if _, err := a.Release(owner("x")); err != nil {
		t.Fatal(err)
	}
	y, _ := a.Allocate(owner("y"))
	if y[0] == x[0] {
		t.Fatalf("freed %s handed out again at once", x[0])
	}
}

func TestLeasesPersist(t *testing.T) {
	dir := t.TempDir()
	a := open(t, dir, "10.0.0.0/30")
	x, _ := a.Allocate(owner("x"))
	b := open(t, dir, "10.0.0.0/30")
	y, err := b.Allocate(owner("y"))
	if err != nil || y[0] == x[0] {
		t.Fatalf("after reopening: %v %v (x has %v)", y, err, x)
	}
	if got := b.Leases(); len(got) != 2 || got[0].Owner != owner("x") {
		t.Fatalf("leases after reopening: %+v", got)
	}
}

// TestUnreadableLeaseHoldsItsAddress: a lease file cut short by a crash
// keeps its address taken; GC frees it.
func TestUnreadableLeaseHoldsItsAddress(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "10.0.0.1"), []byte(`{"addr":`), 0o600); err != nil {
		t.Fatal(err)
	}
	a := open(t, dir, "10.0.0.0/30")
	x, _ := a.Allocate(owner("x"))
	if x[0].String() != "10.0.0.2" {
		t.Fatalf("got %v, want 10.0.0.2 (10.0.0.1 is held by an unreadable lease)", x)
	}
	freed, err := a.GC("net", func(Owner) bool { return true })
	if err != nil || len(freed) != 1 || !freed[0].Unreadable {
		t.Fatalf("GC: %+v %v", freed, err)
	}
}

func TestGCKeepsOtherNetworks(t *testing.T) {
	a := open(t, t.TempDir(), "10.0.0.0/24")
	_, _ = a.Allocate(owner("x"))
	_, _ = a.Allocate(Owner{Network: "other", ContainerID: "y", IfName: "eth0"})
	freed, err := a.GC("net", func(o Owner) bool { return false })
	if err != nil || len(freed) != 1 || freed[0].Owner != owner("x") {
		t.Fatalf("GC of net: %+v %v", freed, err)
	}
	if l := a.Leases(); len(l) != 1 || l[0].Owner.Network != "other" {
		t.Fatalf("left: %+v", l)
	}
}

func TestDualStack(t *testing.T) {
	a := open(t, t.TempDir(), "10.0.0.0/24", "fd00:10::/120")
	got, err := a.Allocate(owner("x"))
	if err != nil || len(got) != 2 || got[0].String() != "10.0.0.1" || got[1].String() != "fd00:10::1" {
		t.Fatalf("dual stack: %v %v", got, err)
	}
}

// TestFailedFamilyRollsBack: when one family is exhausted, the address of
// the other is not kept.
func TestFailedFamilyRollsBack(t *testing.T) {
	a := open(t, t.TempDir(), "10.0.0.0/24", "fd00:10::/127") // v6: one usable
	if _, err := a.Allocate(owner("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Allocate(owner("y")); !errors.Is(err, ErrExhausted) {
		t.Fatalf("got %v, want ErrExhausted", err)
	}
	if l := a.Leases(); len(l) != 2 {
		t.Fatalf("leases %+v: y's IPv4 address was kept", l)
	}
}

func TestSetRangesRejects(t *testing.T) {
	a, _ := Open(t.TempDir())
	for _, bad := range [][]netip.Prefix{
		{netip.MustParsePrefix("10.0.0.0/24"), netip.MustParsePrefix("10.1.0.0/24")},
		{{}},
	} {
		if err := a.SetRanges(bad); err == nil {
			t.Errorf("SetRanges(%v) accepted", bad)
		}
	}
	if _, err := a.Allocate(owner("x")); !errors.Is(err, ErrNoRange) {
		t.Fatalf("without ranges: %v, want ErrNoRange", err)
	}
}

// TestConcurrentAllocate: parallel allocations and releases never hand
// out one address twice (run with -race).
func TestConcurrentAllocate(t *testing.T) {
	a := open(t, t.TempDir(), "10.0.0.0/26") // 62 usable
	var wg sync.WaitGroup
	got := make([][]netip.Addr, 40)
	errs := make([]error, 40)
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], errs[i] = a.Allocate(owner(fmt.Sprint(i)))
			if i%4 == 0 && errs[i] == nil {
				_, errs[i] = a.Release(owner(fmt.Sprint(i)))
				got[i] = nil
			}
		}()
	}
	wg.Wait()
	seen := map[netip.Addr]int{}
	for i, g := range got {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		for _, addr := range g {
			if j, dup := seen[addr]; dup {
				t.Fatalf("%s handed to %d and %d", addr, j, i)
			}
			seen[addr] = i
		}
	}
	if l := a.Leases(); len(l) != 30 {
		t.Fatalf("%d leases, want 30", len(l))
	}
}
