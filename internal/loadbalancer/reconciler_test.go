package loadbalancer_test

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfmap"
	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
	lb "github.com/fastpath-net/fastpath/internal/loadbalancer"
	"github.com/fastpath-net/fastpath/internal/loadbalancer/lbdump"
)

func mustSync(t testing.TB, r *lb.Reconciler, tab *lb.Table) {
	t.Helper()
	if err := r.Sync(tab); err != nil {
		t.Fatal(err)
	}
}

func mustUpsert(t testing.TB, tab *lb.Table, svc lb.Service) {
	t.Helper()
	if err := tab.Upsert(svc); err != nil {
		t.Fatal(err)
	}
}

// A change to one service among 1000 writes only that service's entries.
func TestOneChangeAmong1000(t *testing.T) {
	f := newFakes(1 << 16)
	tab := lb.NewTable()
	r := lb.NewReconciler(f.maps, lb.ReconcilerOptions{})
	for i := range 1000 {
		mustUpsert(t, tab, svcN(i, 2))
	}
	mustSync(t, r, tab)
	if got, want := f.ops(), "services=3000/0 backends=2000/0 revnat=1000/0"; got != want {
		t.Fatalf("initial sync: %s, want %s", got, want)
	}
	before := f.dump(t)

	mustUpsert(t, tab, svcN(500, 3))
	mustSync(t, r, tab)
	if got, want := f.ops(), "services=2/0 backends=1/0 revnat=0/0"; got != want {
		t.Errorf("adding a backend: %s, want %s", got, want)
	}
	mustUpsert(t, tab, svcN(500, 1))
	mustSync(t, r, tab)
	if got, want := f.ops(), "services=1/2 backends=0/2 revnat=0/0"; got != want {
		t.Errorf("removing two backends: %s, want %s", got, want)
	}
	tab.Delete(svcN(600, 0).Name)
	mustSync(t, r, tab)
	if got, want := f.ops(), "services=0/3 backends=0/2 revnat=0/1"; got != want {
		t.Errorf("deleting a service: %s, want %s", got, want)
	}
	mustUpsert(t, tab, svcN(600, 2))
	mustUpsert(t, tab, svcN(500, 2))
	mustSync(t, r, tab)
	f.ops()
	if after := f.dump(t); view(mustParse(t, after)) != view(mustParse(t, before)) {
		t.Errorf("after undoing the changes the maps differ from before")
	}
	if err := r.Resync(tab); err != nil {
		t.Fatal(err)
	}
	if got, want := f.ops(), "services=0/0 backends=0/0 revnat=0/0"; got != want {
		t.Errorf("resync of an exact state: %s, want %s", got, want)
	}
}

func mustParse(t testing.TB, s string) lbdump.Contents {
	t.Helper()
	c, err := lbdump.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A write failure in one service leaves the others programmed, keeps the
// failed frontend dirty, and the next Sync finishes it.
func TestWriteErrorIsRetried(t *testing.T) {
	h := newHarness(t, 100, rand.New(rand.NewPCG(1, 2)).IntN)
	tab := lb.NewTable()
	r := lb.NewReconciler(h.maps, lb.ReconcilerOptions{})
	mustUpsert(t, tab, svcN(1, 2))
	mustSync(t, r, tab)
	h.f.ops()

	h.failPc = 100
	mustUpsert(t, tab, svcN(2, 2))
	err := r.Sync(tab)
	if !errors.Is(err, errInjected) || !strings.Contains(err.Error(), "service bench/svc-2: frontend 10.96.0.2:80/TCP") {
		t.Fatalf("error %v: want the injected error naming bench/svc-2 and its frontend", err)
	}
	if tab.Dirty() != 1 {
		t.Errorf("%d dirty frontends after the failure, want 1", tab.Dirty())
	}
	h.failPc = 0
	mustSync(t, r, tab)
	got := view(mustRead(t, h.f.maps))
	for _, want := range []string{
		"10.96.0.1:80/TCP slot 0 flags=0 aff=0 revnat=10.96.0.1:80 -> 10.1.0.1:8080/6/0 10.2.0.1:8080/6/0",
		"10.96.0.2:80/TCP slot 0 flags=0 aff=0 revnat=10.96.0.2:80 -> 10.1.0.2:8080/6/0 10.2.0.2:8080/6/0",
		"entries: services=6 backends=4 revnat=2",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q after the retry:\n%s", want, got)
		}
	}
	h.f.ops()
	if err := r.Resync(tab); err != nil {
		t.Fatal(err)
	}
	if ops := h.f.ops(); ops != "services=0/0 backends=0/0 revnat=0/0" {
		t.Errorf("resync after the retry wrote %s", ops)
	}
}

// Random upserts, deletes, restarts and failing map calls. After every
// single map call the datapath must see only whole services; after a
// failed sync the maps hold nothing that neither the desired state nor the
// maps before it account for; once the failures stop, Sync must reach
// exactly the desired state, which a fresh reconciler reaches too, and
// Resync must then find nothing to do.
func TestRandomWithFailures(t *testing.T) {
	injected := 0
	t.Cleanup(func() {
		t.Logf("%d map calls failed on purpose", injected)
		if injected < 1000 {
			t.Errorf("only %d map calls failed over all seeds: the test does not test failures", injected)
		}
	})
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 42))
		h := newHarness(t, 1<<12, rng.IntN)
		desired := map[lb.ServiceName]lb.Service{}
		tab := lb.NewTable()
		r := lb.NewReconciler(h.maps, lb.ReconcilerOptions{})
		restarted := false
		for step := range 200 {
			h.failPc = []int{0, 10, 30}[step%3]
			switch op := rng.IntN(40); {
			case op < 20:
				svc := randomService(rng)
				desired[svc.Name] = svc
				mustUpsert(t, tab, svc)
			case op < 28:
				name := randomService(rng).Name
				delete(desired, name)
				tab.Delete(name)
			case op < 38:
				syncAccounted(t, h, desired, func() error { return r.Sync(tab) })
			case op == 38:
				tab = lb.NewTable()
				for _, svc := range desired {
					mustUpsert(t, tab, svc)
				}
				r = lb.NewReconciler(h.maps, lb.ReconcilerOptions{})
				if err := r.Restore(); err != nil {
					t.Fatal(err)
				}
				restarted = true
			default:
				syncAccounted(t, h, desired, func() error { return r.Resync(tab) })
			}
		}
		h.failPc = 0
		injected += h.fails
		if err := r.Sync(tab); err != nil {
			t.Fatalf("seed %d: sync without failures: %v", seed, err)
		}
		if restarted {
			// Frontends a crashed agent left and nobody wants are Resync's.
			if err := r.Resync(tab); err != nil {
				t.Fatalf("seed %d: resync: %v", seed, err)
			}
		}
		got := view(mustRead(t, h.f.maps))

		fresh := newFakes(1 << 12)
		ft := lb.NewTable()
		for _, svc := range desired {
			mustUpsert(t, ft, svc)
		}
		mustSync(t, lb.NewReconciler(fresh.maps, lb.ReconcilerOptions{}), ft)
		if want := view(mustRead(t, fresh.maps)); got != want {
			t.Fatalf("seed %d (%d of %d calls failed): maps after recovery\n%s\nwant\n%s", seed, h.fails, h.calls, got, want)
		}
		h.f.ops()
		if err := r.Resync(tab); err != nil {
			t.Fatal(err)
		}
		if ops := h.f.ops(); ops != "services=0/0 backends=0/0 revnat=0/0" {
			t.Errorf("seed %d: resync after recovery wrote %s", seed, ops)
		}
	}
}

// syncAccounted runs sync, where failures are expected, and checks that a
// failed one leaves only entries that something accounts for.
func syncAccounted(t *testing.T, h *harness, desired map[lb.ServiceName]lb.Service, sync func() error) {
	t.Helper()
	before := mustRead(t, h.f.maps)
	if sync() == nil {
		return
	}
	if err := accountedFor(mustRead(t, h.f.maps), before, desired); err != nil {
		t.Fatalf("after a failed sync the maps hold entries nothing accounts for:\n%v", err)
	}
}

func mustRead(t testing.TB, m lbmap.Maps) lbdump.Contents {
	t.Helper()
	c, err := lbdump.Read(m)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// randomService draws from 6 names with fixed VIPs, 1-2 ports, and
// backends from a pool of 10 addresses that services share.
func randomService(rng *rand.Rand) lb.Service {
	i := rng.IntN(12)
	svc := lb.Service{Name: lb.ServiceName{Namespace: "r", Name: string(rune('a' + i))}}
	vip := netip.AddrFrom4([4]byte{10, 96, 0, byte(i)})
	for _, port := range []uint16{80, 443}[:1+rng.IntN(2)] {
		fe := lb.FrontendSpec{Frontend: lb.Frontend{L4Addr: lb.L4Addr{Addr: vip, Port: port, Proto: lb.TCP}}}
		if rng.IntN(3) == 0 {
			fe.AffinityTimeout = time.Duration(1+rng.IntN(3)) * time.Hour
		}
		var all []lb.Backend
		for _, j := range rng.Perm(10)[:rng.IntN(6)] {
			all = append(all, lb.Backend{
				L4Addr: lb.L4Addr{Addr: netip.AddrFrom4([4]byte{10, 0, 0, byte(j)}), Port: 8080, Proto: lb.TCP},
				State:  lb.BackendState(rng.IntN(2)),
			})
		}
		fe.Backends = lb.SelectBackends(all)
		svc.Frontends = append(svc.Frontends, fe)
	}
	return svc
}

// Maps an earlier agent or someone else left in a bad way: Restore must not
// fail or panic, Sync must not make things worse, and Resync must leave
// exactly the desired state.
func TestRestoreCorruptMaps(t *testing.T) {
	f := newFakes(1 << 16)
	junk := `
services: 10.96.0.1:80/TCP slot 0 -> count=3 revnat=5 flags=- affinity=0
services: 10.96.0.1:80/TCP slot 1 -> backend=1
services: 10.96.0.1:80/TCP slot 2 -> backend=77
services: 10.96.0.1:80/TCP slot 3 -> backend=0
services: 10.96.0.1:80/TCP slot 65535 -> backend=1
services: 10.96.0.1:80/TCP slot 9 -> backend=1 count=4 flags=nodeport
services: 10.96.0.2:80/TCP slot 0 -> count=1 revnat=5 flags=- affinity=0
services: 10.96.0.2:80/TCP slot 1 -> backend=4294967295
services: 10.96.0.3:80/TCP slot 7 -> backend=2
backends: 0 -> 10.9.9.9:1/TCP active
backends: 1 -> 10.1.0.1:8080/TCP state-9
backends: 2 -> 10.1.0.1:8080/TCP active
backends: 4294967295 -> 10.9.9.8:1/TCP active
revnat: 0 -> 10.96.0.9:9
revnat: 5 -> 10.96.0.2:80
`
	if err := mustParse(t, junk).Write(f.maps); err != nil {
		t.Fatal(err)
	}
	tab := lb.NewTable()
	r := lb.NewReconciler(f.maps, lb.ReconcilerOptions{})
	if err := r.Restore(); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		mustUpsert(t, tab, svcN(i, 2))
	}
	mustSync(t, r, tab)
	if err := datapathSafe(mustRead(t, f.maps)); err != nil {
		t.Errorf("after sync: %v", err)
	}
	if err := r.Resync(tab); err != nil {
		t.Fatal(err)
	}
	got := view(mustRead(t, f.maps))
	fresh := newFakes(1 << 16)
	mustSync(t, lb.NewReconciler(fresh.maps, lb.ReconcilerOptions{}), tab2(t, 3))
	if want := view(mustRead(t, fresh.maps)); got != want {
		t.Errorf("after resync\n%s\nwant\n%s", got, want)
	}
	// IDs adopted at restore survive: 10.96.0.1 keeps rev-NAT 5 (first in
	// key order), 10.1.0.1:8080 keeps backend 1 (the lower of 1 and 2).
	d := f.dump(t)
	for _, line := range []string{
		"services: 10.96.0.1:80/TCP slot 0 -> count=2 revnat=5 flags=- affinity=0",
		"services: 10.96.0.1:80/TCP slot 1 -> backend=1",
		"backends: 1 -> 10.1.0.1:8080/TCP active",
	} {
		if !strings.Contains(d, line+"\n") {
			t.Errorf("missing %q in\n%s", line, d)
		}
	}
}

func tab2(t testing.TB, n int) *lb.Table {
	tab := lb.NewTable()
	for i := 1; i <= n; i++ {
		mustUpsert(t, tab, svcN(i, 2))
	}
	return tab
}

func TestMapFullErrorIs(t *testing.T) {
	f := newFakes(4)
	tab := lb.NewTable()
	r := lb.NewReconciler(f.maps, lb.ReconcilerOptions{})
	mustUpsert(t, tab, svcN(1, 5))
	err := r.Sync(tab)
	if !errors.Is(err, bpfmap.ErrFull) {
		t.Fatalf("got %v, want ErrFull", err)
	}
	if err := datapathSafe(mustRead(t, f.maps)); err != nil {
		t.Error(err)
	}
}

// One changed service among 50,000: the time of a Sync must not grow with
// the number of services.
func BenchmarkSyncOneChange50k(b *testing.B) {
	f := newFakes(1 << 20)
	tab := lb.NewTable()
	r := lb.NewReconciler(f.maps, lb.ReconcilerOptions{})
	for i := range 50000 {
		mustUpsert(b, tab, svcN(i, 2))
	}
	mustSync(b, r, tab)
	variants := []lb.Service{svcN(25000, 3), svcN(25000, 2)}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		b.StopTimer()
		mustUpsert(b, tab, variants[i%2])
		i++
		b.StartTimer()
		mustSync(b, r, tab)
	}
}

// The same with the Upsert included, as a source would see it.
func BenchmarkUpsertAndSyncOneChange50k(b *testing.B) {
	f := newFakes(1 << 20)
	tab := lb.NewTable()
	r := lb.NewReconciler(f.maps, lb.ReconcilerOptions{})
	for i := range 50000 {
		mustUpsert(b, tab, svcN(i, 2))
	}
	mustSync(b, r, tab)
	variants := []lb.Service{svcN(25000, 3), svcN(25000, 2)}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		mustUpsert(b, tab, variants[i%2])
		i++
		mustSync(b, r, tab)
	}
}

func BenchmarkResync50k(b *testing.B) {
	f := newFakes(1 << 20)
	tab := lb.NewTable()
	r := lb.NewReconciler(f.maps, lb.ReconcilerOptions{})
	for i := range 50000 {
		mustUpsert(b, tab, svcN(i, 2))
	}
	mustSync(b, r, tab)
	b.ReportAllocs()
	for b.Loop() {
		if err := r.Resync(tab); err != nil {
			b.Fatal(err)
		}
	}
}
