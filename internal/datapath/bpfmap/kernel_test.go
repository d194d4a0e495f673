package bpfmap

import (
	"fmt"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/fastpath-net/fastpath/internal/testpriv"
)

// testKey and testVal have the layout of lbmap.ServiceKey and ServiceValue,
// blank padding included (lbmap imports this package, so no import here).
type testKey struct {
	Addr  [16]byte
	Port  uint16
	Proto uint8
	Scope uint8
	Slot  uint16
	_     uint16
}

type testVal struct {
	BackendID uint32
	Count     uint16
	Flags     uint16
	RevNat    uint32
	Affinity  uint32
}

// entries returns n distinct keys, spread over address, port and slot the
// way services are, each with a value that differs from every other.
func entries(n int) ([]testKey, []testVal) {
	keys, vals := make([]testKey, n), make([]testVal, n)
	for i := range n {
		keys[i].Addr = [16]byte{10: 0xff, 11: 0xff, 12: 10, 13: 96, 14: byte(i >> 10), 15: byte(i >> 2)}
		keys[i].Port, keys[i].Proto, keys[i].Slot = 80, 6, uint16(i&3)
		vals[i] = testVal{BackendID: uint32(i), Count: uint16(i), RevNat: uint32(i) * 7, Affinity: ^uint32(i)}
	}
	return keys, vals
}

// newKernel returns a Kernel over a fresh, unpinned map of the given type,
// closed when the test ends.
func newKernel[K comparable, V any](tb testing.TB, typ ebpf.MapType, keySize, valSize, max uint32) *Kernel[K, V] {
	tb.Helper()
	testpriv.Require(tb)
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: typ, KeySize: keySize, ValueSize: valSize, MaxEntries: max})
	if err != nil {
		tb.Fatalf("creating a %s map: %v", typ, err)
	}
	tb.Cleanup(func() { m.Close() })
	return NewKernel[K, V](m, "test_"+typ.String())
}

// allPaths are the ways All can read a map. "batch, chunk 1" starts with a
// buffer smaller than most hash buckets (10,000 entries in 16,384 buckets
// collide), so it passes only if ENOSPC grows the buffer and resumes.
var allPaths = []struct {
	name     string
	iterOnly bool
	chunk    int
}{
	{name: "batch"},
	{name: "batch, chunk 1", chunk: 1},
	{name: "iterate", iterOnly: true},
}

func TestKernelAllHash(t *testing.T) {
	for _, typ := range []ebpf.MapType{ebpf.Hash, ebpf.LRUHash} {
		for _, p := range allPaths {
			t.Run(fmt.Sprintf("%s/%s", typ, p.name), func(t *testing.T) {
				// LRU maps evict before they are full; twice the room avoids it.
				k := newKernel[testKey, testVal](t, typ, 24, 16, 20000)
				k.iterOnly, k.chunk = p.iterOnly, p.chunk
				keys, vals := entries(10000)
				if err := k.Update(keys, vals); err != nil {
					t.Fatal(err)
				}
				checkAll(t, k, keys, vals)
				if !p.iterOnly && k.noBatchLookup.Load() {
					t.Errorf("All fell back to iterating: BatchLookup is not supported here")
				}
			})
		}
	}
}

// An array map holds every index; All returns each, written or not.
func TestKernelAllArray(t *testing.T) {
	for _, p := range allPaths {
		t.Run(p.name, func(t *testing.T) {
			k := newKernel[uint32, uint64](t, ebpf.Array, 4, 8, 10000)
			k.iterOnly, k.chunk = p.iterOnly, p.chunk
			keys, vals := make([]uint32, 10000), make([]uint64, 10000)
			for i := range keys {
				keys[i] = uint32(i)
				if i%3 != 0 {
					vals[i] = uint64(i) << 33
				}
			}
			// Index 0 is never written: All must still return it.
			if err := k.Update(keys[1:], vals[1:]); err != nil {
				t.Fatal(err)
			}
			checkAll(t, k, keys, vals)
		})
	}
}

// Per-CPU values come back one per CPU, which BatchLookup would need laid
// out differently; All must take the per-element path for them.
func TestKernelAllPerCPU(t *testing.T) {
	k := newKernel[uint32, []uint64](t, ebpf.PerCPUHash, 4, 8, 64)
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	vals := make([]uint64, ncpu)
	for i := range vals {
		vals[i] = uint64(i + 1)
	}
	if err := k.m.Put(uint32(7), vals); err != nil {
		t.Fatal(err)
	}
	all, err := k.All()
	if err != nil {
		t.Fatal(err)
	}
	if got := all[7]; len(all) != 1 || fmt.Sprint(got) != fmt.Sprint(vals) {
		t.Errorf("All = %v, want map[7:%v]", all, vals)
	}
}

func checkAll[K comparable, V comparable](t *testing.T, k *Kernel[K, V], keys []K, vals []V) {
	t.Helper()
	all, err := k.All()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != len(keys) {
		t.Errorf("All returned %d entries, want %d", len(all), len(keys))
	}
	bad := 0
	for i, key := range keys {
		if got, ok := all[key]; (!ok || got != vals[i]) && bad < 5 {
			bad++
			t.Errorf("key %v: got %v (present %v), want %v", key, got, ok, vals[i])
		}
	}
}

// BenchmarkKernelAll50k reads a services-sized hash map (50,000 entries in
// 65,536) both ways.
func BenchmarkKernelAll50k(b *testing.B) {
	for _, iterOnly := range []bool{false, true} {
		name := map[bool]string{false: "batch", true: "iterate"}[iterOnly]
		b.Run(name, func(b *testing.B) {
			k := newKernel[testKey, testVal](b, ebpf.Hash, 24, 16, 65536)
			k.iterOnly = iterOnly
			keys, vals := entries(50000)
			if err := k.Update(keys, vals); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				all, err := k.All()
				if err != nil || len(all) != len(keys) {
					b.Fatalf("All: %d entries, %v", len(all), err)
				}
			}
		})
	}
}

// A walk and lookups allocate nothing per entry or per call once warm: the
// agent walks the ct map every few seconds with a lookup per expired entry,
// and the garbage of each pass (a fresh batch buffer, a heap copy of every
// looked-up key and value) pushed its heap towards twice its live size.
func TestKernelRangeAndLookupReuseBuffers(t *testing.T) {
	k := newKernel[testKey, testVal](t, ebpf.Hash, 24, 16, 20000)
	keys, vals := entries(10000)
	if err := k.Update(keys, vals); err != nil {
		t.Fatal(err)
	}
	const lookups = 1000
	seen, bad := 0, 0
	pass := func() {
		if err := k.Range(func(testKey, testVal) bool { seen++; return true }); err != nil {
			t.Fatal(err)
		}
		for i := range lookups {
			if v, ok, err := k.Lookup(keys[i]); err != nil || !ok || v != vals[i] {
				bad++
			}
		}
	}
	allocs := testing.AllocsPerRun(5, pass)
	if seen != 6*len(keys) || bad > 0 {
		t.Fatalf("walks saw %d entries, want %d; %d lookups wrong", seen, 6*len(keys), bad)
	}
	t.Logf("%.0f allocations a pass", allocs)
	// Before the reuse: 2 per walk and 2 per lookup, 2,002 a pass.
	if allocs > 20 {
		t.Errorf("a walk of %d entries and %d lookups made %.0f allocations, want at most 20", len(keys), lookups, allocs)
	}
}
