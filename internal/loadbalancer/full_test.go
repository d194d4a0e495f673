package loadbalancer_test

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfmap"
	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
	lb "github.com/fastpath-net/fastpath/internal/loadbalancer"
	"github.com/fastpath-net/fastpath/internal/loadbalancer/lbdump"
)

func tcp(addr string, port uint16) lb.L4Addr {
	return lb.L4Addr{Addr: netip.MustParseAddr(addr), Port: port, Proto: lb.TCP}
}

// frontend is vip with one active backend per address, all on port.
func frontend(vip lb.L4Addr, port uint16, addrs ...string) lb.FrontendSpec {
	fe := lb.FrontendSpec{Frontend: lb.Frontend{L4Addr: vip}}
	for _, a := range addrs {
		fe.Backends = append(fe.Backends, lb.Backend{L4Addr: tcp(a, port)})
	}
	return fe
}

// webAndBig is the case seen for real: web needs 6 services entries (2
// frontends x (slot 0 + 2 slots)), big 6 (slot 0 + 5 slots). big's VIP
// sorts first, so a batch writes its slots before web's.
func webAndBig() (web, big lb.Service) {
	web = lb.Service{Name: lb.ServiceName{Namespace: "demo", Name: "web"}, Frontends: []lb.FrontendSpec{
		frontend(tcp("10.96.0.30", 80), 8080, "10.0.1.2", "10.0.1.3"),
		frontend(tcp("10.96.0.30", 443), 8443, "10.0.1.2", "10.0.1.3"),
	}}
	big = lb.Service{Name: lb.ServiceName{Namespace: "demo", Name: "big"}, Frontends: []lb.FrontendSpec{
		frontend(tcp("10.96.0.20", 80), 80, "10.0.2.1", "10.0.2.2", "10.0.2.3", "10.0.2.4", "10.0.2.5"),
	}}
	return web, big
}

// entriesOf counts what the maps hold for a service: services and rev-NAT
// entries on its VIPs, backends among its backends.
func entriesOf(c lbdump.Contents, svc lb.Service) (services, backends, revNat int) {
	vips, bes := map[lbmap.Addr]bool{}, map[lbmap.Addr]bool{}
	for _, fe := range svc.Frontends {
		vips[lbmap.AddrFrom(fe.Addr)] = true
		for _, b := range fe.Backends {
			bes[lbmap.AddrFrom(b.Addr)] = true
		}
	}
	for k := range c.Services {
		if vips[k.Addr] {
			services++
		}
	}
	for _, b := range c.Backends {
		if bes[b.Addr] {
			backends++
		}
	}
	for _, rn := range c.RevNat {
		if vips[rn.Addr] {
			revNat++
		}
	}
	return services, backends, revNat
}

// wantOnly checks the maps hold exactly the given services, programmed as
// a fresh reconciler with roomy maps programs them.
func wantOnly(t *testing.T, f *fakes, svcs ...lb.Service) {
	t.Helper()
	got := mustRead(t, f.maps)
	if err := datapathSafe(got); err != nil {
		t.Error(err)
	}
	fresh := newFakes(1 << 10)
	tab := lb.NewTable()
	for _, svc := range svcs {
		mustUpsert(t, tab, svc)
	}
	mustSync(t, lb.NewReconciler(fresh.maps, lb.ReconcilerOptions{}), tab)
	if g, w := view(got), view(mustRead(t, fresh.maps)); g != w {
		t.Errorf("maps hold\n%s\nwant\n%s", g, w)
	}
}

// A fresh agent whose services map holds 8 entries, wanting web (6) and big
// (6): web is programmed whole, big fails with ErrFull and leaves nothing,
// again on every retry, and gets in once room is made.
func TestFullMapFreshAgent(t *testing.T) {
	web, big := webAndBig()
	start := func(t *testing.T) (*fakes, *lb.Table, *lb.Reconciler) {
		f := newFakesSized(8, 64, 64)
		tab := lb.NewTable()
		mustUpsert(t, tab, web)
		mustUpsert(t, tab, big)
		r := lb.NewReconciler(f.maps, lb.ReconcilerOptions{})
		for try := range 2 {
			checkBigFailed(t, fmt.Sprintf("sync %d", try+1), r.Sync(tab))
			wantOnly(t, f, web)
			if s, b, rn := entriesOf(mustRead(t, f.maps), big); s+b+rn != 0 {
				t.Errorf("sync %d: big left %d services, %d backends, %d rev-NAT entries", try+1, s, b, rn)
			}
		}
		return f, tab, r
	}
	t.Run("web deleted", func(t *testing.T) {
		f, tab, r := start(t)
		tab.Delete(web.Name)
		mustSync(t, r, tab)
		wantOnly(t, f, big)
	})
	t.Run("map resized", func(t *testing.T) {
		f, tab, r := start(t)
		f.svc.SetMaxEntries(12)
		mustSync(t, r, tab)
		wantOnly(t, f, web, big)
	})
	t.Run("resync", func(t *testing.T) {
		f, tab, r := start(t)
		checkBigFailed(t, "resync", r.Resync(tab))
		wantOnly(t, f, web)
	})
}

func checkBigFailed(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, bpfmap.ErrFull) {
		t.Fatalf("%s: %v, want ErrFull", what, err)
	}
	msg := err.Error()
	if !strings.Contains(msg, "service demo/big: frontend 10.96.0.20:80/TCP: ") || strings.Contains(msg, "demo/web") {
		t.Errorf("%s: error %q, want it to name demo/big and its frontend only", what, msg)
	}
}

// A programmed frontend whose new backends do not fit keeps its old state
// exactly: the slots it overwrote are written back, the slot it added and
// the backends only the new state used are deleted, and the backend it
// keeps gets its old state back.
func TestFailedGrowthKeepsOldState(t *testing.T) {
	f := newFakesSized(3, 64, 64)
	tab := lb.NewTable()
	r := lb.NewReconciler(f.maps, lb.ReconcilerOptions{})
	vip := tcp("10.96.0.10", 80)
	old := lb.Service{Name: lb.ServiceName{Namespace: "demo", Name: "a"},
		Frontends: []lb.FrontendSpec{frontend(vip, 80, "10.0.1.1", "10.0.1.2")}}
	mustUpsert(t, tab, old)
	mustSync(t, r, tab)
	before := f.dump(t)

	grown := old
	grown.Frontends = []lb.FrontendSpec{frontend(vip, 80, "10.0.1.1", "10.0.9.2", "10.0.9.3")}
	grown.Frontends[0].Backends[0].State = lb.Terminating
	mustUpsert(t, tab, grown)
	if err := r.Sync(tab); !errors.Is(err, bpfmap.ErrFull) {
		t.Fatalf("growing past the map: %v, want ErrFull", err)
	}
	if after := f.dump(t); after != before {
		t.Errorf("after the failed growth the maps hold\n%s\nwant, as before\n%s", after, before)
	}
	f.svc.SetMaxEntries(4)
	mustSync(t, r, tab)
	wantOnly(t, f, grown)
}

// Random services, deletes, restarts and resyncs on maps too small for
// them, with no failure but a full map. After every sync the maps hold
// only whole frontends; each is what the table wants, or, if the error
// names it, exactly what it was before; every error is ErrFull. Once the
// maps are made big enough, one Sync programs everything.
func TestRandomFullMaps(t *testing.T) {
	failed := 0
	t.Cleanup(func() {
		t.Logf("%d syncs ran out of room", failed)
		if failed < 500 {
			t.Errorf("only %d syncs ran out of room over all seeds: the test does not test full maps", failed)
		}
	})
	for seed := range uint64(100) {
		rng := rand.New(rand.NewPCG(seed, 7))
		f := newFakesSized(10+rng.IntN(50), 5+rng.IntN(10), 4+rng.IntN(16))
		h := newHarnessOn(t, f, rng.IntN) // checks the datapath after every call
		desired := map[lb.ServiceName]lb.Service{}
		tab, r := lb.NewTable(), lb.NewReconciler(h.maps, lb.ReconcilerOptions{})
		restarted := false
		sync := func(resync bool) {
			run := r.Sync
			if resync {
				run = r.Resync
			}
			before := mustRead(t, f.maps)
			err := run(tab)
			if err != nil {
				failed++
			}
			if msg := checkFullSync(before, mustRead(t, f.maps), desired, resync, err); msg != "" {
				t.Fatalf("seed %d: %s", seed, msg)
			}
		}
		for range 200 {
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
				sync(false)
			case op == 38:
				tab, r = lb.NewTable(), lb.NewReconciler(h.maps, lb.ReconcilerOptions{})
				for _, svc := range desired {
					mustUpsert(t, tab, svc)
				}
				if err := r.Restore(); err != nil {
					t.Fatal(err)
				}
				restarted = true
			default:
				sync(true)
			}
		}
		for _, m := range []interface{ SetMaxEntries(int) }{f.svc, f.be, f.rev} {
			m.SetMaxEntries(1 << 12)
		}
		mustSync(t, r, tab)
		if restarted { // frontends a restarted agent found and nobody wants
			if err := r.Resync(tab); err != nil {
				t.Fatal(err)
			}
		}
		wantOnly(t, f, slices.Collect(maps.Values(desired))...)
	}
}

// checkFullSync says what is wrong with the maps after a sync that may
// have run out of room, or "".
func checkFullSync(before, after lbdump.Contents, desired map[lb.ServiceName]lb.Service, resync bool, err error) string {
	for _, e := range leaves(err) {
		if !errors.Is(e, bpfmap.ErrFull) || strings.Contains(e.Error(), "rolling back") {
			return fmt.Sprintf("error %q: want only ErrFull, with no failed rollback", e)
		}
	}
	if werr := whole(after); werr != nil {
		return fmt.Sprintf("maps hold more than whole frontends:\n%v\n%s", werr, view(after))
	}
	want := frontendLines(programmed(desired))
	was, got := frontendLines(before), frontendLines(after)
	for _, k := range sortedFrontends(want, was, got) {
		failed := err != nil && strings.Contains(err.Error(), "frontend "+feName(k)+": ")
		expect := want[k]
		switch _, wanted := want[k]; {
		case failed:
			expect = was[k] // put back as it was, or still absent
		case !wanted && !resync && got[k] != "":
			expect = was[k] // Sync leaves what a restarted agent found
		}
		if got[k] != expect {
			return fmt.Sprintf("frontend %s (failed %v): got %q, want %q\nerror: %v", feName(k), failed, got[k], expect, err)
		}
	}
	return ""
}

// whole checks that every entry belongs to a whole frontend: slots within
// a slot 0's count, backends some slot names, rev-NAT entries some slot 0
// names.
func whole(c lbdump.Contents) error {
	var errs []error
	named, revs := map[uint32]bool{}, map[uint32]bool{}
	for k, v := range c.Services {
		fk := k
		fk.Slot = 0
		if s0, ok := c.Services[fk]; k.Slot > 0 && (!ok || k.Slot > s0.Count) {
			errs = append(errs, fmt.Errorf("slot %v beyond its frontend's count", k))
		}
		named[v.BackendID] = k.Slot > 0 || named[v.BackendID]
		if k.Slot == 0 {
			revs[v.RevNatID] = true
		}
	}
	for id := range c.Backends {
		if !named[id] {
			errs = append(errs, fmt.Errorf("backend %d named by no slot", id))
		}
	}
	for id := range c.RevNat {
		if !revs[id] {
			errs = append(errs, fmt.Errorf("rev-NAT %d named by no slot 0", id))
		}
	}
	return errors.Join(errs...)
}

// programmed is how a fresh reconciler with roomy maps programs svcs.
func programmed(svcs map[lb.ServiceName]lb.Service) lbdump.Contents {
	f := newFakes(1 << 12)
	tab := lb.NewTable()
	for _, svc := range svcs {
		if err := tab.Upsert(svc); err != nil {
			panic(err)
		}
	}
	if err := lb.NewReconciler(f.maps, lb.ReconcilerOptions{}).Sync(tab); err != nil {
		panic(err)
	}
	c, err := lbdump.Read(f.maps)
	if err != nil {
		panic(err)
	}
	return c
}

// frontendLines renders each frontend without IDs and without backend
// states (the state of a shared backend depends on which frontends got in).
func frontendLines(c lbdump.Contents) map[lbmap.ServiceKey]string {
	out := map[lbmap.ServiceKey]string{}
	for k, v := range c.Services {
		if k.Slot != 0 {
			continue
		}
		var bes []string
		for n := 1; n <= int(v.Count); n++ {
			sk := k
			sk.Slot = uint16(n)
			b := c.Backends[c.Services[sk].BackendID]
			bes = append(bes, fmt.Sprintf("%s:%d", b.Addr, b.Port))
		}
		rn := c.RevNat[v.RevNatID]
		out[k] = fmt.Sprintf("flags=%d aff=%d revnat=%s:%d -> %s", v.Flags, v.AffinityTimeout, rn.Addr, rn.Port, strings.Join(bes, " "))
	}
	return out
}

func sortedFrontends(ms ...map[lbmap.ServiceKey]string) []lbmap.ServiceKey {
	var keys []lbmap.ServiceKey
	for _, m := range ms {
		for k := range m {
			if !slices.Contains(keys, k) {
				keys = append(keys, k)
			}
		}
	}
	slices.SortFunc(keys, func(a, b lbmap.ServiceKey) int { return strings.Compare(feName(a), feName(b)) })
	return keys
}

// feName renders a frontend as errors do.
func feName(k lbmap.ServiceKey) string {
	return netip.AddrPortFrom(k.Addr.IP(), k.Port).String() + "/" + lbmap.ProtoName(k.Proto)
}

// leaves flattens joined errors.
func leaves(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, leaves(e)...)
		}
		return out
	}
	return []error{err}
}
