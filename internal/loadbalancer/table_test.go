package loadbalancer_test

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	lb "github.com/fastpath-net/fastpath/internal/loadbalancer"
)

func TestUpsertValidation(t *testing.T) {
	svc := svcN(1, 2)
	fe := &svc.Frontends[0]
	fe.Port = 0
	fe.AffinityTimeout = 1500 * time.Millisecond
	fe.Backends[0].Port = 0
	fe.Backends[1].Proto = lb.UDP
	fe.Backends = append(fe.Backends,
		lb.Backend{L4Addr: lb.L4Addr{Addr: netip.MustParseAddr("fd00::1"), Port: 1, Proto: lb.TCP}},
		lb.Backend{L4Addr: lb.L4Addr{Port: 1, Proto: lb.TCP}},
		fe.Backends[0])
	svc.Frontends = append(svc.Frontends, svc.Frontends[0])

	tab := lb.NewTable()
	err := tab.Upsert(svc)
	if !errors.Is(err, lb.ErrInvalid) {
		t.Fatalf("got %v, want ErrInvalid", err)
	}
	at := "service bench/svc-1: frontends[0] (10.96.0.1:0/TCP)"
	for _, want := range []string{
		at + ": port 0 is out of range 1-65535",
		at + ": affinity timeout 1.5s is not a whole number of seconds",
		at + ": backends[0] (10.1.0.1:0/TCP): port 0 is out of range 1-65535",
		at + ": backends[1] (10.2.0.1:8080/UDP): protocol UDP differs from the frontend's TCP",
		at + ": backends[2] ([fd00::1]:1/TCP): address family differs from the frontend's",
		at + ": backends[3] ((no address):1/TCP): address: missing",
		at + ": backends[4] (10.1.0.1:0/TCP): same backend as backends[0]",
		"service bench/svc-1: frontends[1] (10.96.0.1:0/TCP): same frontend as frontends[0]",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if tab.Dirty() != 0 || tab.Len() != 0 {
		t.Errorf("an invalid service changed the table: %d dirty, %d services", tab.Dirty(), tab.Len())
	}
}

func TestBackendLimit(t *testing.T) {
	tab := lb.NewTable(lb.WithMaxBackendsPerFrontend(3))
	if err := tab.Upsert(svcN(1, 3)); err != nil {
		t.Fatal(err)
	}
	err := tab.Upsert(svcN(1, 4))
	want := "service bench/svc-1: frontends[0] (10.96.0.1:80/TCP): 4 backends, more than the limit of 3"
	if !errors.Is(err, lb.ErrInvalid) || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
}

// Above 16 frontends or backends, duplicates are found through a map
// rather than a scan: the same problems, naming the same earlier entry.
func TestUpsertValidationManyFrontendsAndBackends(t *testing.T) {
	svc := svcN(1, 20)
	fe := svc.Frontends[0]
	fe.Backends[19] = fe.Backends[2]
	fe.Backends[19].State = lb.Terminating // the state does not make it another backend
	for p := range 20 {
		more := fe
		more.Backends = fe.Backends[:1]
		more.Port = uint16(100 + p)
		svc.Frontends = append(svc.Frontends, more)
	}
	svc.Frontends = append(svc.Frontends, svc.Frontends[5])
	err := lb.NewTable().Upsert(svc)
	for _, want := range []string{
		"service bench/svc-1: frontends[0] (10.96.0.1:80/TCP): backends[19] (10.3.0.1:8080/TCP): same backend as backends[2]",
		"service bench/svc-1: frontends[21] (10.96.0.1:104/TCP): same frontend as frontends[5]",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if n := strings.Count(err.Error(), "\n") + 1; n != 2 {
		t.Errorf("%d problems, want 2:\n%v", n, err)
	}
}

// The table holds frontends in key order whatever the source's order:
// the same frontends listed another way are no change, and Names lists
// what the table holds.
func TestFrontendOrderIsNoChange(t *testing.T) {
	svc := svcN(1, 1)
	fe := svc.Frontends[0]
	for _, port := range []uint16{443, 8080, 53} {
		more := fe
		more.Port = port
		svc.Frontends = append(svc.Frontends, more)
	}
	tab := lb.NewTable()
	mustUpsert(t, tab, svc)
	mustUpsert(t, tab, svcN(2, 1))
	f := newFakes(100)
	r := lb.NewReconciler(f.maps, lb.ReconcilerOptions{})
	mustSync(t, r, tab)
	slices.Reverse(svc.Frontends)
	mustUpsert(t, tab, svc)
	if n := tab.Dirty(); n != 0 {
		t.Errorf("%d dirty after the same frontends in another order", n)
	}
	// One frontend fewer, one changed: two dirty, and the sync removes one.
	svc.Frontends = svc.Frontends[1:]
	svc.Frontends[0].Backends = svcN(3, 1).Frontends[0].Backends
	mustUpsert(t, tab, svc)
	if n := tab.Dirty(); n != 2 {
		t.Errorf("%d dirty, want 2", n)
	}
	mustSync(t, r, tab)
	if c := r.Counts(); c.Frontends != 4 {
		t.Errorf("%d frontends programmed, want 4 (3 + svc-2)", c.Frontends)
	}
	names := tab.Names()
	slices.SortFunc(names, func(a, b lb.ServiceName) int { return strings.Compare(a.Name, b.Name) })
	if want := []lb.ServiceName{svcN(1, 0).Name, svcN(2, 0).Name}; !slices.Equal(names, want) {
		t.Errorf("Names() = %v, want %v", names, want)
	}
	tab.Delete(svcN(1, 0).Name)
	if names := tab.Names(); len(names) != 1 || names[0] != svcN(2, 0).Name {
		t.Errorf("Names() after a delete = %v", names)
	}
}

// IPv4-mapped IPv6 addresses are the same frontend as plain IPv4.
func TestMappedAddressesAreOneFrontend(t *testing.T) {
	tab := lb.NewTable()
	mustUpsert(t, tab, svcN(1, 1))
	other := svcN(1, 1)
	other.Name.Name = "other"
	other.Frontends[0].Addr = netip.AddrFrom16(other.Frontends[0].Addr.As16())
	err := tab.Upsert(other)
	var ce *lb.ConflictError
	if !errors.As(err, &ce) || ce.Owner != svcN(1, 1).Name || ce.Frontend.Addr != netip.MustParseAddr("10.96.0.1") {
		t.Fatalf("got %v, want a conflict with bench/svc-1 on 10.96.0.1", err)
	}
}

func TestUpsertUnchangedIsClean(t *testing.T) {
	f := newFakes(100)
	tab := lb.NewTable()
	r := lb.NewReconciler(f.maps, lb.ReconcilerOptions{})
	mustUpsert(t, tab, svcN(1, 2))
	mustSync(t, r, tab)
	mustUpsert(t, tab, svcN(1, 2))
	if n := tab.Dirty(); n != 0 {
		t.Errorf("%d dirty after an unchanged upsert", n)
	}
	// Changing only the type changes slot 0's flags.
	svc := svcN(1, 2)
	svc.Frontends[0].Type = lb.LoadBalancer
	mustUpsert(t, tab, svc)
	mustSync(t, r, tab)
	if got, want := f.ops(), "services=4/0 backends=2/0 revnat=1/0"; got != want {
		t.Errorf("ops %s, want %s (3+1 service writes)", got, want)
	}
}

// Conflicts: the first owner keeps the frontend, waiters queue in arrival
// order, and a waiter that gives up the frontend leaves the queue.
func TestConflictQueue(t *testing.T) {
	tab := lb.NewTable()
	f := newFakes(100)
	r := lb.NewReconciler(f.maps, lb.ReconcilerOptions{})
	named := func(name string, backends int) lb.Service {
		s := svcN(1, backends)
		s.Name.Name = name
		return s
	}
	mustUpsert(t, tab, named("a", 1))
	for _, n := range []string{"b", "c"} {
		if err := tab.Upsert(named(n, 2)); !errors.Is(err, lb.ErrConflict) {
			t.Fatalf("%s: got %v, want a conflict", n, err)
		}
	}
	mustSync(t, r, tab)
	// b gives the frontend up: c is next in line.
	mustUpsert(t, tab, lb.Service{Name: named("b", 0).Name})
	tab.Delete(named("a", 0).Name)
	mustUpsert(t, tab, named("c", 3)) // c owns it now: no conflict
	mustSync(t, r, tab)
	if d := f.dump(t); !strings.Contains(d, "count=3") {
		t.Errorf("c did not take the frontend over:\n%s", d)
	}
}

func TestConcurrentSourcesAndSync(t *testing.T) {
	f := newFakes(1 << 16)
	tab := lb.NewTable()
	r := lb.NewReconciler(f.maps, lb.ReconcilerOptions{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 200 {
				_ = tab.Upsert(svcN(w*1000+i%50, 1+i%3))
				if i%7 == 0 {
					tab.Delete(svcN(w*1000+i%50, 0).Name)
				}
			}
		})
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 50 {
			_ = r.Sync(tab)
		}
	}()
	wg.Wait()
	<-done
	mustSync(t, r, tab)
	if err := datapathSafe(mustRead(t, f.maps)); err != nil {
		t.Error(err)
	}
	f.ops()
	if err := r.Resync(tab); err != nil {
		t.Fatal(err)
	}
	if got := f.ops(); got != "services=0/0 backends=0/0 revnat=0/0" {
		t.Errorf("resync after concurrent updates wrote %s", got)
	}
}

func TestSelectBackends(t *testing.T) {
	be := func(last byte, s lb.BackendState) lb.Backend {
		return lb.Backend{L4Addr: lb.L4Addr{Addr: netip.AddrFrom4([4]byte{10, 0, 0, last}), Port: 80, Proto: lb.TCP}, State: s}
	}
	A, T, Q := lb.Active, lb.Terminating, lb.Quarantined
	cases := []struct {
		in, want []lb.Backend
	}{
		{nil, nil},
		{[]lb.Backend{be(1, T), be(2, A), be(3, Q), be(4, A)}, []lb.Backend{be(2, A), be(4, A)}},
		{[]lb.Backend{be(3, T), be(1, Q), be(2, T)}, []lb.Backend{be(3, T), be(2, T)}},
		{[]lb.Backend{be(1, Q)}, nil},
	}
	for i, c := range cases {
		in := append([]lb.Backend(nil), c.in...)
		got := lb.SelectBackends(c.in)
		if len(got) != len(c.want) {
			t.Errorf("case %d: got %v, want %v", i, got, c.want)
			continue
		}
		for j := range got {
			if got[j] != c.want[j] {
				t.Errorf("case %d: got %v, want %v", i, got, c.want)
			}
		}
		for j := range in {
			if in[j] != c.in[j] {
				t.Errorf("case %d: input modified", i)
			}
		}
	}
}
