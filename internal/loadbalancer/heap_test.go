package loadbalancer_test

import (
	"runtime"
	"testing"

	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
	lb "github.com/fastpath-net/fastpath/internal/loadbalancer"
)

// discard is a map that takes every write and holds nothing, so the heap
// a test measures is the Table's and the Reconciler's alone.
type discard[K comparable, V any] struct{ name string }

func (discard[K, V]) Update(keys []K, vals []V) error    { return nil }
func (discard[K, V]) Delete(keys []K) error              { return nil }
func (discard[K, V]) Lookup(K) (v V, ok bool, err error) { return v, false, nil }
func (discard[K, V]) All() (map[K]V, error)              { return map[K]V{}, nil }
func (discard[K, V]) Range(func(K, V) bool) error        { return nil }
func (discard[K, V]) MaxEntries() int                    { return 1 << 24 }
func (d discard[K, V]) Name() string                     { return d.name }

func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// maxLiveBytesPerService bounds the Go heap the Table and the Reconciler
// keep per programmed service of one frontend and one backend of its own,
// measured at 10,000 services: 1,924 bytes when the table held a Go map
// per service (81 MiB at 50,000 services, the agent's biggest memory
// item), 862 since it holds a sorted slice. The bound leaves 30 % for map
// growth steps and Go versions; above it, look at a heap profile of this
// test before raising it.
const maxLiveBytesPerService = 1120

// The live heap per service stays under maxLiveBytesPerService at 10,000
// services, once synced (the agent's steady state) and after a full
// resync.
func TestLiveHeapPerService(t *testing.T) {
	const n = 10000
	svcs := make([]lb.Service, n)
	for i := range svcs {
		svcs[i] = svcN(i, 1)
	}
	maps := lbmap.Maps{
		Services:     discard[lbmap.ServiceKey, lbmap.ServiceValue]{"fp_services"},
		Backends:     discard[uint32, lbmap.Backend]{"fp_backends"},
		RevNat:       discard[uint32, lbmap.RevNat]{"fp_rev_nat"},
		SourceRanges: discard[lbmap.SourceRangeKey, uint8]{"fp_source_ranges"},
	}
	before := liveHeap()
	tab := lb.NewTable()
	r := lb.NewReconciler(maps, lb.ReconcilerOptions{TrackGoneUDP: true})
	for _, s := range svcs {
		mustUpsert(t, tab, s)
	}
	mustSync(t, r, tab)
	synced := liveHeap()
	if err := r.Resync(tab); err != nil {
		t.Fatal(err)
	}
	resynced := liveHeap()
	if c := r.Counts(); c.Frontends != n || c.Backends != n {
		t.Fatalf("programmed %+v, want %d frontends and backends", c, n)
	}
	for _, h := range []struct {
		when string
		heap uint64
	}{{"synced", synced}, {"resynced", resynced}} {
		per := (int64(h.heap) - int64(before)) / n
		t.Logf("%s: %d bytes per service", h.when, per)
		if per > maxLiveBytesPerService {
			t.Errorf("%s: the table and reconciler keep %d bytes per service, more than %d", h.when, per, maxLiveBytesPerService)
		}
		if per < 100 { // a 1-frontend service costs more than this: the measure is broken
			t.Errorf("%s: %d bytes per service cannot be right: is the heap measured?", h.when, per)
		}
	}
	runtime.KeepAlive(svcs)
	runtime.KeepAlive(tab)
	runtime.KeepAlive(r)
}

// store is a map held in a Go map whose Range walks it without a copy
// (bpfmap.Fake's copies, which would count as the reader's allocations).
type store[K comparable, V any] struct {
	discard[K, V]
	m map[K]V
}

func newStore[K comparable, V any](name string) *store[K, V] {
	return &store[K, V]{discard: discard[K, V]{name}, m: map[K]V{}}
}

func (s *store[K, V]) Update(keys []K, vals []V) error {
	for i, k := range keys {
		s.m[k] = vals[i]
	}
	return nil
}

func (s *store[K, V]) Delete(keys []K) error {
	for _, k := range keys {
		delete(s.m, k)
	}
	return nil
}

func (s *store[K, V]) Range(fn func(K, V) bool) error {
	for k, v := range s.m {
		if !fn(k, v) {
			break
		}
	}
	return nil
}

// maxResyncBytesPerService bounds what a full resync that finds nothing to
// change allocates per service (1 frontend, 1 backend), nearly all of it
// live until it returns: the agent runs one every 5 minutes, and a GC
// during it sets the heap goal at twice the live heap plus this. 1,280
// bytes when the maps were read into Go maps and changes copied their
// specs, 574 since; the bound leaves 30 %.
const maxResyncBytesPerService = 750

func TestResyncAllocationsPerService(t *testing.T) {
	const n = 10000
	maps := lbmap.Maps{
		Services:     newStore[lbmap.ServiceKey, lbmap.ServiceValue]("fp_services"),
		Backends:     newStore[uint32, lbmap.Backend]("fp_backends"),
		RevNat:       newStore[uint32, lbmap.RevNat]("fp_rev_nat"),
		SourceRanges: newStore[lbmap.SourceRangeKey, uint8]("fp_source_ranges"),
	}
	tab := lb.NewTable()
	r := lb.NewReconciler(maps, lb.ReconcilerOptions{})
	for i := range n {
		mustUpsert(t, tab, svcN(i, 1))
	}
	mustSync(t, r, tab)
	if err := r.Resync(tab); err != nil { // the first may find something to do
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if err := r.Resync(tab); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if c := r.Counts(); c.Frontends != n || c.Backends != n {
		t.Fatalf("programmed %+v, want %d frontends and backends", c, n)
	}
	per := (after.TotalAlloc - before.TotalAlloc) / n
	t.Logf("a resync allocated %d bytes per service", per)
	if per > maxResyncBytesPerService {
		t.Errorf("a resync allocated %d bytes per service, more than %d", per, maxResyncBytesPerService)
	}
}
