package loadbalancer_test

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfmap"
	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
	lb "github.com/fastpath-net/fastpath/internal/loadbalancer"
	"github.com/fastpath-net/fastpath/internal/loadbalancer/lbdump"
)

// svcN is service number i: VIP 10.96.x.y:80/TCP and n backends on 8080.
func svcN(i, n int) lb.Service {
	vip := netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)})
	fe := lb.FrontendSpec{Frontend: lb.Frontend{L4Addr: lb.L4Addr{Addr: vip, Port: 80, Proto: lb.TCP}}}
	for j := range n {
		be := netip.AddrFrom4([4]byte{10, byte(1 + j), byte(i >> 8), byte(i)})
		fe.Backends = append(fe.Backends, lb.Backend{L4Addr: lb.L4Addr{Addr: be, Port: 8080, Proto: lb.TCP}})
	}
	return lb.Service{Name: lb.ServiceName{Namespace: "bench", Name: fmt.Sprintf("svc-%d", i)}, Frontends: []lb.FrontendSpec{fe}}
}

type fakes struct {
	maps lbmap.Maps
	svc  *bpfmap.Fake[lbmap.ServiceKey, lbmap.ServiceValue]
	be   *bpfmap.Fake[uint32, lbmap.Backend]
	rev  *bpfmap.Fake[uint32, lbmap.RevNat]
	rng  *bpfmap.Fake[lbmap.SourceRangeKey, uint8]
}

func newFakes(capacity int) *fakes {
	return newFakesSized(capacity, capacity, capacity)
}

// newFakesSized gives each map its own capacity, as a real agent's maps may
// have: a services map fills long before the others.
func newFakesSized(services, backends, revNat int) *fakes {
	f := &fakes{
		svc: bpfmap.NewFake[lbmap.ServiceKey, lbmap.ServiceValue]("fp_services", services),
		be:  bpfmap.NewFake[uint32, lbmap.Backend]("fp_backends", backends),
		rev: bpfmap.NewFake[uint32, lbmap.RevNat]("fp_rev_nat", revNat),
		rng: bpfmap.NewFake[lbmap.SourceRangeKey, uint8]("fp_source_ranges", revNat),
	}
	f.maps = lbmap.Maps{Services: f.svc, Backends: f.be, RevNat: f.rev, SourceRanges: f.rng}
	return f
}

// ops returns "services=W/D backends=W/D revnat=W/D" and resets the counters.
func (f *fakes) ops() string {
	sw, sd := f.svc.Ops()
	bw, bd := f.be.Ops()
	rw, rd := f.rev.Ops()
	return fmt.Sprintf("services=%d/%d backends=%d/%d revnat=%d/%d", sw, sd, bw, bd, rw, rd)
}

func (f *fakes) dump(t testing.TB) string {
	t.Helper()
	c, err := lbdump.Read(f.maps)
	if err != nil {
		t.Fatal(err)
	}
	return c.String()
}

// datapathSafe returns what a packet arriving now could trip over: a
// service entry whose slots or backends are missing, or whose rev-NAT
// entry is missing or wrong.
func datapathSafe(c lbdump.Contents) error {
	var errs []error
	for k, v := range c.Services {
		if k.Slot != 0 {
			continue
		}
		for n := 1; n <= int(v.Count); n++ {
			sk := k
			sk.Slot = uint16(n)
			slot, ok := c.Services[sk]
			if !ok {
				errs = append(errs, fmt.Errorf("%v: count %d but slot %d missing", k, v.Count, n))
				continue
			}
			if _, ok := c.Backends[slot.BackendID]; !ok {
				errs = append(errs, fmt.Errorf("%v names backend %d, which is missing", sk, slot.BackendID))
			}
		}
		if rn, ok := c.RevNat[v.RevNatID]; !ok || rn != (lbmap.RevNat{Addr: k.Addr, Port: k.Port}) {
			errs = append(errs, fmt.Errorf("%v: rev-NAT %d is %v (present %v)", k, v.RevNatID, rn, ok))
		}
	}
	return errors.Join(errs...)
}

// view renders the maps without IDs: each frontend with its flags, rev-NAT
// target and backends in slot order, and the count of every entry. Two
// runs that allocate IDs differently compare equal.
func view(c lbdump.Contents) string {
	var lines []string
	for k, v := range c.Services {
		if k.Slot != 0 {
			continue
		}
		var bes []string
		for n := 1; n <= int(v.Count); n++ {
			sk := k
			sk.Slot = uint16(n)
			b := c.Backends[c.Services[sk].BackendID]
			bes = append(bes, fmt.Sprintf("%s:%d/%d/%d", b.Addr, b.Port, b.Proto, b.State))
		}
		rn := c.RevNat[v.RevNatID]
		lines = append(lines, fmt.Sprintf("%v flags=%d aff=%d revnat=%s:%d -> %s",
			k, v.Flags, v.AffinityTimeout, rn.Addr, rn.Port, strings.Join(bes, " ")))
	}
	slices.Sort(lines)
	lines = append(lines, fmt.Sprintf("entries: services=%d backends=%d revnat=%d", len(c.Services), len(c.Backends), len(c.RevNat)))
	return strings.Join(lines, "\n")
}

var errInjected = errors.New("injected failure")

// faulty wraps a map: each call may fail after applying a prefix of its
// keys, like a kernel batch that stops half-way, and after each call the
// whole datapath-visible state is checked.
type faulty[K comparable, V any] struct {
	bpfmap.Map[K, V]
	h *harness
}

func (f *faulty[K, V]) Update(keys []K, vals []V) error {
	n, fail := f.h.inject(len(keys))
	err := f.Map.Update(keys[:n], vals[:n])
	if err == nil && fail {
		err = &bpfmap.KeyError[K]{Map: f.Name(), Key: keys[n], Err: errInjected}
	}
	f.h.check()
	return err
}

func (f *faulty[K, V]) Delete(keys []K) error {
	n, fail := f.h.inject(len(keys))
	err := f.Map.Delete(keys[:n])
	if err == nil && fail {
		err = &bpfmap.KeyError[K]{Map: f.Name(), Key: keys[n], Err: errInjected}
	}
	f.h.check()
	return err
}

// harness holds the fakes behind the faulty maps and the failure dice.
type harness struct {
	t      testing.TB
	f      *fakes
	maps   lbmap.Maps
	roll   func(n int) int // random int in [0,n)
	failPc int             // percent of calls that fail
	calls  int
	fails  int
}

func newHarness(t testing.TB, capacity int, roll func(int) int) *harness {
	return newHarnessOn(t, newFakes(capacity), roll)
}

func newHarnessOn(t testing.TB, f *fakes, roll func(int) int) *harness {
	h := &harness{t: t, f: f, roll: roll}
	h.maps = lbmap.Maps{
		Services: &faulty[lbmap.ServiceKey, lbmap.ServiceValue]{Map: h.f.svc, h: h},
		Backends: &faulty[uint32, lbmap.Backend]{Map: h.f.be, h: h},
		RevNat:   &faulty[uint32, lbmap.RevNat]{Map: h.f.rev, h: h},
	}
	return h
}

// inject says how many of n keys to apply and whether the call then fails.
func (h *harness) inject(n int) (int, bool) {
	h.calls++
	if n == 0 || h.roll(100) >= h.failPc {
		return n, false
	}
	h.fails++
	return h.roll(n), true
}

func (h *harness) check() {
	h.t.Helper()
	c, err := lbdump.Read(h.f.maps)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := datapathSafe(c); err != nil {
		h.t.Fatalf("after map call %d the datapath could see a half-made service:\n%v\n%s", h.calls, err, c)
	}
}

// accountedFor returns the entries of after that neither before (what the
// maps held before a sync: what was programmed, and what earlier failures
// left) nor the desired services account for. A failed sync may leave its
// frontends' new entries when even its rollback failed, but never entries
// nothing wants: slots beyond a frontend's backends, backends no frontend
// lists, rev-NAT entries of frontends nobody has.
func accountedFor(after, before lbdump.Contents, desired map[lb.ServiceName]lb.Service) error {
	slots := map[lbmap.ServiceKey]int{}
	vips := map[lbmap.RevNat]bool{}
	bes := map[lb.L4Addr]bool{}
	for _, svc := range desired {
		for _, fe := range svc.Frontends {
			slots[frontendKeyOf(fe.Frontend)] = len(fe.Backends)
			vips[lbmap.RevNat{Addr: lbmap.AddrFrom(fe.Addr), Port: fe.Port}] = true
			for _, b := range fe.Backends {
				bes[b.L4Addr] = true
			}
		}
	}
	var errs []error
	for k := range after.Services {
		fk := k
		fk.Slot = 0
		if n, ok := slots[fk]; !ok || int(k.Slot) > n {
			if _, was := before.Services[k]; !was {
				errs = append(errs, fmt.Errorf("services entry %v", k))
			}
		}
	}
	for id, b := range after.Backends {
		_, was := before.Backends[id]
		if !was && !bes[lb.L4Addr{Addr: b.Addr.IP(), Port: b.Port, Proto: lb.Proto(b.Proto)}] {
			errs = append(errs, fmt.Errorf("backend %d %v", id, b))
		}
	}
	for id, rn := range after.RevNat {
		if _, was := before.RevNat[id]; !was && !vips[rn] {
			errs = append(errs, fmt.Errorf("rev-NAT %d %v", id, rn))
		}
	}
	return errors.Join(errs...)
}

// frontendKeyOf is the slot-0 key of an external-scope frontend.
func frontendKeyOf(f lb.Frontend) lbmap.ServiceKey {
	return lbmap.ServiceKey{Addr: lbmap.AddrFrom(f.Addr), Port: f.Port, Proto: uint8(f.Proto), Scope: uint8(f.Scope)}
}
