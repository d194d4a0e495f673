package bpfmap

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Kernel is a Map backed by a real BPF map. Batches use the kernel's batch
// operations where the map type supports them and fall back to one syscall
// per element otherwise.
type Kernel[K comparable, V any] struct {
	m    *ebpf.Map
	name string

	batchOnce sync.Once
	batchOK   bool

	// noBatchLookup is set once BatchLookup answered ErrNotSupported (a
	// kernel before 5.6, or a map type without it), so All stops asking.
	noBatchLookup atomic.Bool
	// Test knobs: iterOnly forces All's per-element path; chunk, when
	// set, is All's first batch size, so a test can make buckets overflow.
	iterOnly bool
	chunk    int

	// Scratch reused across calls, so a walk of the ct map every few
	// seconds (Range, and a Lookup per expired entry) does not make
	// hundreds of KiB of garbage each time: lookups holds *kv, batches
	// *batchBufs. A pool lets the runtime drop them when idle.
	lookups sync.Pool
	batches sync.Pool
}

// kv is one Lookup's key and value: the kernel call takes pointers, which
// would move a local key and value to the heap at every call.
type kv[K comparable, V any] struct {
	k K
	v V
}

// batchBufs are rangeBatch's key and value buffers.
type batchBufs[K comparable, V any] struct {
	keys []K
	vals []V
}

// NewKernel wraps m. name is used in errors.
func NewKernel[K comparable, V any](m *ebpf.Map, name string) *Kernel[K, V] {
	return &Kernel[K, V]{m: m, name: name}
}

// EbpfMap exposes the underlying map, for pinning and for the loader.
func (k *Kernel[K, V]) EbpfMap() *ebpf.Map { return k.m }

func (k *Kernel[K, V]) Update(keys []K, vals []V) error {
	if len(keys) != len(vals) {
		return fmt.Errorf("map %s: %d keys but %d values", k.name, len(keys), len(vals))
	}
	if len(keys) == 0 {
		return nil
	}
	if len(keys) > 1 && k.batchSupported() {
		if _, err := k.m.BatchUpdate(keys, vals, nil); err == nil {
			return nil
		}
		// A failed batch stops at an unknown element: redo it one by one so
		// the error names the key that failed.
	}
	for i := range keys {
		if err := k.m.Update(&keys[i], &vals[i], ebpf.UpdateAny); err != nil {
			return &KeyError[K]{Map: k.name, Key: keys[i], Err: classify(err)}
		}
	}
	return nil
}

func (k *Kernel[K, V]) Delete(keys []K) error {
	for i := range keys {
		err := k.m.Delete(&keys[i])
		if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return &KeyError[K]{Map: k.name, Key: keys[i], Err: err}
		}
	}
	return nil
}

func (k *Kernel[K, V]) Lookup(key K) (V, bool, error) {
	s, _ := k.lookups.Get().(*kv[K, V])
	if s == nil {
		s = new(kv[K, V])
	}
	s.k = key
	err := k.m.Lookup(&s.k, &s.v)
	v := s.v
	k.lookups.Put(s)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		var zero V
		return zero, false, nil
	}
	if err != nil {
		var zero V
		return zero, false, fmt.Errorf("map %s: lookup %v: %w", k.name, key, err)
	}
	return v, true, nil
}

// All reads the map in batches of allChunk entries (one syscall each)
// where the kernel and map type allow it, and otherwise with two syscalls
// per entry (next key, lookup): at 150,000 entries that is ~40 calls
// instead of 300,000.
func (k *Kernel[K, V]) All() (map[K]V, error) {
	out := make(map[K]V)
	err := k.Range(func(key K, val V) bool {
		out[key] = val
		return true
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Range walks the map in batches where the kernel can, one entry at a
// time otherwise. Entries written or deleted during the walk may or may not
// be seen, as with any BPF map iteration.
func (k *Kernel[K, V]) Range(fn func(K, V) bool) error {
	if k.batchLookupUsable() {
		err := k.rangeBatch(fn)
		if !errors.Is(err, ebpf.ErrNotSupported) {
			return err
		}
		k.noBatchLookup.Store(true)
	}
	return k.rangeIterate(fn)
}

// allChunk bounds one BatchLookup: 160 KiB of buffers for the services
// map, the largest we read, and few enough calls for 150,000 entries.
const allChunk = 4096

// batchLookupUsable rules out per-CPU maps, whose values BatchLookup
// returns per CPU, a layout V does not have; Iterate handles them.
func (k *Kernel[K, V]) batchLookupUsable() bool {
	switch k.m.Type() {
	case ebpf.PerCPUHash, ebpf.PerCPUArray, ebpf.LRUCPUHash, ebpf.PerCPUCGroupStorage:
		return false
	}
	return !k.iterOnly && !k.noBatchLookup.Load()
}

// rangeBatch walks the map with a batch cursor. A hash map hands out whole
// buckets, and answers ENOSPC, cursor unmoved, when the next bucket does
// not fit the buffer: then the buffer doubles and the call is repeated.
func (k *Kernel[K, V]) rangeBatch(fn func(K, V) bool) error {
	b, _ := k.batches.Get().(*batchBufs[K, V])
	if n := k.firstChunk(); b == nil || len(b.keys) < n {
		b = &batchBufs[K, V]{keys: make([]K, n), vals: make([]V, n)}
	}
	defer k.batches.Put(b) // grown buffers too: the bucket that needed them is still there
	keys, vals := b.keys, b.vals
	var cursor ebpf.MapBatchCursor
	for {
		got, err := k.m.BatchLookup(&cursor, keys, vals, nil)
		for i := range got {
			if !fn(keys[i], vals[i]) {
				return nil
			}
		}
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist): // the end, maybe with entries
			return nil
		case errors.Is(err, unix.ENOSPC) && got == 0 && len(keys) < k.MaxEntries():
			keys, vals = make([]K, 2*len(keys)), make([]V, 2*len(vals))
			b.keys, b.vals = keys, vals
		case errors.Is(err, ebpf.ErrNotSupported):
			if got > 0 { // cannot fall back half-way: the caller saw entries
				return fmt.Errorf("map %s: batch lookup stopped: %w", k.name, err)
			}
			return err // Range falls back
		case err != nil:
			return fmt.Errorf("map %s: batch lookup: %w", k.name, err)
		}
	}
}

// firstChunk is allChunk, or less for a map that cannot hold that many
// (no bucket is bigger than the map).
func (k *Kernel[K, V]) firstChunk() int {
	n := allChunk
	if k.chunk > 0 {
		n = k.chunk
	}
	return max(1, min(n, k.MaxEntries()))
}

func (k *Kernel[K, V]) rangeIterate(fn func(K, V) bool) error {
	var key K
	var val V
	it := k.m.Iterate()
	for it.Next(&key, &val) {
		if !fn(key, val) {
			return nil
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("map %s: iterate: %w", k.name, err)
	}
	return nil
}

func (k *Kernel[K, V]) MaxEntries() int { return int(k.m.MaxEntries()) }
func (k *Kernel[K, V]) Name() string    { return k.name }

// batchSupported probes once with an empty batch: the kernel answers EINVAL
// for count 0 when the operation exists and ENOTSUPP/EOPNOTSUPP when not.
func (k *Kernel[K, V]) batchSupported() bool {
	k.batchOnce.Do(func() {
		_, err := k.m.BatchUpdate([]K{}, []V{}, nil)
		k.batchOK = err == nil || !errors.Is(err, ebpf.ErrNotSupported)
	})
	return k.batchOK
}

func classify(err error) error {
	if errors.Is(err, unix.E2BIG) || errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.ENOMEM) {
		return fmt.Errorf("%w: %v", ErrFull, err)
	}
	return err
}
