package ctl

import (
	"net/netip"
	"testing"
	"time"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfmap"
	"github.com/fastpath-net/fastpath/internal/datapath/ctmap"
	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
)

// One frontend with affinity (60s) and two slots; each client's memory
// differs from the followed one in exactly one way.
func TestAffinityRowsSayWhetherTheMemoryIsFollowed(t *testing.T) {
	lb, svcs, backends, _ := lbmap.NewFakeMaps(16)
	fe := lbmap.ServiceKey{Addr: lbmap.AddrFrom(netip.MustParseAddr("10.96.0.10")), Port: 80, Proto: lbmap.ProtoTCP}
	slot := func(n uint16) lbmap.ServiceKey { k := fe; k.Slot = n; return k }
	must(t, svcs.Update(
		[]lbmap.ServiceKey{fe, slot(1), slot(2)},
		[]lbmap.ServiceValue{{Count: 2, Flags: lbmap.ServiceAffinity, RevNatID: 7, AffinityTimeout: 60}, {BackendID: 1}, {BackendID: 2}}))
	must(t, backends.Update([]uint32{1, 2}, []lbmap.Backend{
		{Addr: lbmap.AddrFrom(netip.MustParseAddr("10.0.1.5")), Port: 8080},
		{Addr: lbmap.AddrFrom(netip.MustParseAddr("10.0.2.6")), Port: 8080},
	}))

	now := ctmap.Now()
	fresh, stale := now-uint64(5*time.Second), now-uint64(61*time.Second)
	client := func(ip string, revNat uint32) lbmap.AffinityKey {
		return lbmap.AffinityKey{Client: lbmap.AddrFrom(netip.MustParseAddr(ip)), RevNatID: revNat}
	}
	aff := bpfmap.NewFake[lbmap.AffinityKey, lbmap.AffinityValue]("fp_affinity", 16)
	entries := map[lbmap.AffinityKey]lbmap.AffinityValue{
		client("10.0.0.1", 7):            {BackendID: 2, Slot: 2, LastUsed: fresh}, // followed
		client("10.0.0.2", 7):            {BackendID: 2, Slot: 2, LastUsed: stale}, // too old
		client("10.0.0.3", 7):            {BackendID: 2, Slot: 1, LastUsed: fresh}, // slot moved
		client("10.0.0.4", 7):            {BackendID: 9, Slot: 3, LastUsed: fresh}, // above count, gone
		client("10.0.0.5", 8):            {BackendID: 1, Slot: 1, LastUsed: fresh}, // frontend gone
		{NetnsCookie: 4242, RevNatID: 7}: {BackendID: 1, Slot: 1, LastUsed: fresh}, // socket LB, followed
		client("10.0.0.6", 7):            {BackendID: 1, Slot: 1, LastUsed: now + uint64(time.Hour)},
	}
	for k, v := range entries {
		must(t, aff.Update([]lbmap.AffinityKey{k}, []lbmap.AffinityValue{v}))
	}

	rows, err := Affinity(lb, aff)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		frontend, backend string
		followed          bool
	}{
		"10.0.0.1":   {"10.96.0.10:80/TCP", "10.0.2.6:8080", true},
		"10.0.0.2":   {"10.96.0.10:80/TCP", "10.0.2.6:8080", false},
		"10.0.0.3":   {"10.96.0.10:80/TCP", "10.0.2.6:8080", false},
		"10.0.0.4":   {"10.96.0.10:80/TCP", "", false},
		"10.0.0.5":   {"", "10.0.1.5:8080", false},
		"netns:4242": {"10.96.0.10:80/TCP", "10.0.1.5:8080", true},
		"10.0.0.6":   {"10.96.0.10:80/TCP", "10.0.1.5:8080", false},
	}
	if len(rows) != len(want) {
		t.Fatalf("%d rows, want %d: %+v", len(rows), len(want), rows)
	}
	for _, r := range rows {
		w, ok := want[r.Client]
		if !ok || r.Frontend != w.frontend || r.Backend != w.backend || r.Followed != w.followed {
			t.Errorf("row %+v, want %+v", r, w)
		}
	}
	// Sorted by frontend, then client: the unknown frontend ("") first.
	if rows[0].Client != "10.0.0.5" || rows[1].Client != "10.0.0.1" || rows[1].IdleSeconds != 5 {
		t.Errorf("rows start %+v, %+v; want 10.0.0.5, then 10.0.0.1 idle 5s", rows[0], rows[1])
	}
	if out := FormatAffinity(rows); len(out) == 0 {
		t.Error("empty table")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
