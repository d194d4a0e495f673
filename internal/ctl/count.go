package ctl

import (
	"errors"
	"fmt"
	"reflect"
	"sync"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// countChunk entries per BatchLookup: at 250,000 entries a batched count
// took 0.12s here where a walk with a lookup per entry took 1.2s, a cost
// which /metrics pays at every scrape.
const countChunk = 4096

// countEntries counts a map's entries, in batches where the kernel and
// map type allow it (not per-CPU maps, whose values come per CPU; not LPM
// tries), one key at a time otherwise. Key and value buffers are byte
// arrays of the map's sizes, so any map can be counted without its Go
// type.
func countEntries(m *ebpf.Map) (int, error) {
	switch m.Type() {
	case ebpf.Hash, ebpf.LRUHash:
		n, err := countBatch(m)
		if !errors.Is(err, ebpf.ErrNotSupported) {
			return n, err
		}
	}
	return countKeys(m)
}

// countBuf is a key and a value buffer of n entries each, as byte arrays
// of one map's key and value sizes.
type countBuf struct {
	keys, vals any
	n          int
}

// countBufs pools countBufs per key and value size ([2]uint32 to
// *sync.Pool): /metrics counts every map at each scrape, and fresh buffers
// made 1.6 MB of garbage a scrape at the default map sizes.
var countBufs sync.Map

func countBatch(m *ebpf.Map) (int, error) {
	size := min(countChunk, int(m.MaxEntries()))
	bytesOf := func(n uint32) reflect.Type { return reflect.ArrayOf(int(n), reflect.TypeFor[byte]()) }
	alloc := func(n int) *countBuf {
		return &countBuf{
			keys: reflect.MakeSlice(reflect.SliceOf(bytesOf(m.KeySize())), n, n).Interface(),
			vals: reflect.MakeSlice(reflect.SliceOf(bytesOf(m.ValueSize())), n, n).Interface(),
			n:    n,
		}
	}
	sizes := [2]uint32{m.KeySize(), m.ValueSize()}
	p, ok := countBufs.Load(sizes)
	if !ok {
		p, _ = countBufs.LoadOrStore(sizes, new(sync.Pool))
	}
	pool := p.(*sync.Pool)
	buf, _ := pool.Get().(*countBuf)
	if buf == nil || buf.n < size {
		buf = alloc(size)
	}
	size = buf.n
	defer func() { pool.Put(buf) }() // a grown one too: its map still has the big bucket
	keys, vals := buf.keys, buf.vals
	var cursor ebpf.MapBatchCursor
	total := 0
	for {
		got, err := m.BatchLookup(&cursor, keys, vals, nil)
		total += got
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist): // the end
			return total, nil
		case errors.Is(err, unix.ENOSPC) && got == 0 && size < int(m.MaxEntries()):
			// A hash bucket larger than the buffer: grow and retry.
			size *= 2
			buf = alloc(size)
			keys, vals = buf.keys, buf.vals
		case errors.Is(err, ebpf.ErrNotSupported) && total == 0:
			return 0, err
		case err != nil:
			return 0, fmt.Errorf("batch lookup: %w", err)
		}
	}
}

// countKeys walks the keys only (one syscall each), which works for every
// map type, per-CPU ones included. A walk of a map changing under it may
// count an entry twice or miss one: good enough for a fill gauge.
func countKeys(m *ebpf.Map) (int, error) {
	n := 0
	var prev any // nil: the first key
	for {
		next, err := m.NextKeyBytes(prev)
		if err != nil {
			return 0, fmt.Errorf("next key: %w", err)
		}
		if next == nil {
			return n, nil
		}
		n++
		prev = next
	}
}
