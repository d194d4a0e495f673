// Package bpfmap gives typed, batch-capable access to one BPF map, and an
// in-memory twin with the same behaviour for tests that run without a kernel.
package bpfmap

import (
	"errors"
	"fmt"
)

// ErrFull is returned (wrapped) when an insert fails because the map holds
// max_entries already. Callers report it; they never ignore it.
var ErrFull = errors.New("map is full")

// Map is what reconcilers and fastpathctl need from a BPF map.
type Map[K comparable, V any] interface {
	// Update writes every key with its value. On error some pairs may have
	// been written; the error names the first key that failed.
	Update(keys []K, vals []V) error
	// Delete removes the keys; keys that are absent are not an error.
	Delete(keys []K) error
	// Lookup returns the value of key and whether it exists.
	Lookup(key K) (V, bool, error)
	// All returns every entry. Meant for restore and inspection, not hot paths.
	All() (map[K]V, error)
	// Range calls fn for every entry until fn returns false, holding no
	// copy of the map: for walks of large maps (ct GC) that keep little.
	Range(fn func(K, V) bool) error
	// MaxEntries is the capacity the map was created with.
	MaxEntries() int
	// Name identifies the map in errors and status output.
	Name() string
}

// KeyError says which key of a batch failed.
type KeyError[K any] struct {
	Map string
	Key K
	Err error
}

func (e *KeyError[K]) Error() string {
	return fmt.Sprintf("map %s: key %v: %v", e.Map, e.Key, e.Err)
}

func (e *KeyError[K]) Unwrap() error { return e.Err }

// Sync makes the entries of m that owned accepts exactly want: it writes
// the keys of want that are missing or differ and deletes owned entries not
// in want, leaving entries others own alone. For small maps that several
// writers share (nil owned: m is all the caller's).
func Sync[K comparable, V comparable](m Map[K, V], want map[K]V, owned func(K, V) bool) error {
	have, err := m.All()
	if err != nil {
		return err
	}
	var keys, gone []K
	var vals []V
	for k, v := range want {
		if h, ok := have[k]; !ok || h != v {
			keys, vals = append(keys, k), append(vals, v)
		}
	}
	for k, v := range have {
		if _, ok := want[k]; !ok && (owned == nil || owned(k, v)) {
			gone = append(gone, k)
		}
	}
	if len(keys) > 0 {
		if err := m.Update(keys, vals); err != nil {
			return err
		}
	}
	if len(gone) > 0 {
		return m.Delete(gone)
	}
	return nil
}
