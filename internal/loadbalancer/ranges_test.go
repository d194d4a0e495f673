package loadbalancer_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
	lb "github.com/fastpath-net/fastpath/internal/loadbalancer"
	"github.com/fastpath-net/fastpath/internal/loadbalancer/lbdump"
)

func lbService(ranges ...string) lb.Service {
	fe := lb.FrontendSpec{
		Frontend: lb.Frontend{L4Addr: lb.L4Addr{Addr: netip.MustParseAddr("198.51.100.1"), Port: 80, Proto: lb.TCP}, Type: lb.LoadBalancer},
		Backends: []lb.Backend{{L4Addr: lb.L4Addr{Addr: netip.MustParseAddr("10.0.1.1"), Port: 8080, Proto: lb.TCP}}},
	}
	for _, r := range ranges {
		fe.SourceRanges = append(fe.SourceRanges, netip.MustParsePrefix(r))
	}
	return lb.Service{Name: lb.ServiceName{Namespace: "demo", Name: "lb"}, Frontends: []lb.FrontendSpec{fe}}
}

// rangeLines are the dump's source-range lines and the frontend's flags.
func rangeLines(t *testing.T, f *fakes) string {
	t.Helper()
	var out []string
	for _, l := range strings.Split(f.dump(t), "\n") {
		if strings.HasPrefix(l, "ranges: ") || strings.Contains(l, "slot 0") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// Source ranges follow the frontend: written with the flag, changed by
// diff, deleted with the frontend or the last range; a restarted
// reconciler adopts them and writes nothing, and a full resync deletes
// keys no frontend owns.
func TestSourceRangesFollowTheFrontend(t *testing.T) {
	f := newFakes(1 << 10)
	tab := lb.NewTable()
	r := lb.NewReconciler(f.maps, lb.ReconcilerOptions{})
	mustUpsert(t, tab, lbService("203.0.113.0/24", "192.0.2.7/32"))
	mustSync(t, r, tab)
	want := `services: 198.51.100.1:80/TCP slot 0 -> count=1 revnat=1 flags=loadbalancer|source-ranges affinity=0
ranges: 1 -> 192.0.2.7/32
ranges: 1 -> 203.0.113.0/24`
	if got := rangeLines(t, f); got != want {
		t.Fatalf("after create:\n%s\nwant:\n%s", got, want)
	}

	mustUpsert(t, tab, lbService("203.0.113.0/24", "198.18.0.0/15"))
	mustSync(t, r, tab)
	want = `services: 198.51.100.1:80/TCP slot 0 -> count=1 revnat=1 flags=loadbalancer|source-ranges affinity=0
ranges: 1 -> 198.18.0.0/15
ranges: 1 -> 203.0.113.0/24`
	if got := rangeLines(t, f); got != want {
		t.Fatalf("after change:\n%s\nwant:\n%s", got, want)
	}

	// Restart: nothing to write. A stray key of a rev-NAT ID nobody has
	// goes at the full resync.
	stray := lbmap.SourceRangeKeyOf(99, netip.MustParsePrefix("10.0.0.0/8"))
	if err := f.rng.Update([]lbmap.SourceRangeKey{stray}, []uint8{1}); err != nil {
		t.Fatal(err)
	}
	f.ops()
	f.rng.Ops() // counts from here
	r2 := lb.NewReconciler(f.maps, lb.ReconcilerOptions{})
	if err := r2.Restore(); err != nil {
		t.Fatal(err)
	}
	if err := r2.Resync(tab); err != nil {
		t.Fatal(err)
	}
	if w, d := f.rng.Ops(); w != 0 || d != 1 {
		t.Errorf("restart: %d range writes and %d deletes, want 0 and 1 (the stray key)", w, d)
	}
	if _, ok, _ := f.rng.Lookup(stray); ok {
		t.Error("stray key survived the full resync")
	}

	mustUpsert(t, tab, lbService())
	mustSync(t, r2, tab)
	want = `services: 198.51.100.1:80/TCP slot 0 -> count=1 revnat=1 flags=loadbalancer affinity=0`
	if got := rangeLines(t, f); got != want {
		t.Fatalf("after the ranges went:\n%s\nwant:\n%s", got, want)
	}
	mustUpsert(t, tab, lbService("203.0.113.0/24"))
	mustSync(t, r2, tab)
	tab.Delete(lb.ServiceName{Namespace: "demo", Name: "lb"})
	mustSync(t, r2, tab)
	c, err := lbdump.Read(f.maps)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Ranges) != 0 || len(c.Services) != 0 {
		t.Errorf("after delete the maps hold:\n%s", c)
	}
}
