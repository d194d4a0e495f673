package bpfmap

import (
	"fmt"
	"maps"
	"sync"
)

// Fake is an in-memory Map with the kernel map's capacity semantics. It
// records every write, so tests can assert that a change was incremental.
type Fake[K comparable, V any] struct {
	name string
	max  int

	mu      sync.Mutex
	entries map[K]V
	writes  int
	deletes int
}

// NewFake returns an empty fake map holding at most max entries.
func NewFake[K comparable, V any](name string, max int) *Fake[K, V] {
	return &Fake[K, V]{name: name, max: max, entries: make(map[K]V)}
}

func (f *Fake[K, V]) Update(keys []K, vals []V) error {
	if len(keys) != len(vals) {
		return fmt.Errorf("map %s: %d keys but %d values", f.name, len(keys), len(vals))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, k := range keys {
		if _, ok := f.entries[k]; !ok && len(f.entries) >= f.max {
			return &KeyError[K]{Map: f.name, Key: k, Err: ErrFull}
		}
		f.entries[k] = vals[i]
		f.writes++
	}
	return nil
}

func (f *Fake[K, V]) Delete(keys []K) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, k := range keys {
		if _, ok := f.entries[k]; ok {
			delete(f.entries, k)
			f.deletes++
		}
	}
	return nil
}

func (f *Fake[K, V]) Lookup(key K) (V, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.entries[key]
	return v, ok, nil
}

func (f *Fake[K, V]) Range(fn func(K, V) bool) error {
	all, _ := f.All() // fn may write to the map, so walk a copy
	for k, v := range all {
		if !fn(k, v) {
			return nil
		}
	}
	return nil
}

func (f *Fake[K, V]) All() (map[K]V, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.entries), nil
}

func (f *Fake[K, V]) MaxEntries() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.max
}

// SetMaxEntries changes the capacity, standing in for a map recreated
// bigger (or smaller) with its entries kept. Entries beyond a smaller
// capacity stay; only inserts are refused.
func (f *Fake[K, V]) SetMaxEntries(max int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.max = max
}
func (f *Fake[K, V]) Name() string { return f.name }

// Ops returns how many entries were written and deleted since the last call,
// and resets the counters.
func (f *Fake[K, V]) Ops() (writes, deletes int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	writes, deletes = f.writes, f.deletes
	f.writes, f.deletes = 0, 0
	return writes, deletes
}
