// Package pintest rewrites the pins under a datapath's bpffs directory for
// tests that stand in for pins another agent version left: another layout
// version in fp_layout, a map of another shape in place of one.
package pintest

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"
)

// SetLayout writes v to the pinned fp_layout under mapDir.
func SetLayout(t testing.TB, mapDir string, v uint32) {
	t.Helper()
	m := open(t, filepath.Join(mapDir, "fp_layout"))
	defer m.Close()
	if err := m.Update(uint32(0), v, ebpf.UpdateAny); err != nil {
		t.Fatal(err)
	}
}

// Layout reads the pinned fp_layout under mapDir.
func Layout(t testing.TB, mapDir string) uint32 {
	t.Helper()
	m := open(t, filepath.Join(mapDir, "fp_layout"))
	defer m.Close()
	var v uint32
	if err := m.Lookup(uint32(0), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// MapID is the ID of the map pinned at path: another ID, another map.
func MapID(t testing.TB, path string) ebpf.MapID {
	t.Helper()
	m := open(t, path)
	defer m.Close()
	info, err := m.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	return id
}

// Replace pins a new map of spec at path in place of the pinned one and
// returns it; programs attached keep the old map.
func Replace(t testing.TB, path string, spec *ebpf.MapSpec) *ebpf.Map {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	m, err := ebpf.NewMap(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Pin(path); err != nil {
		m.Close()
		t.Fatal(err)
	}
	return m
}

// Truncate pins at path, in place of the pinned map, a copy whose values
// keep only their first valueSize bytes, as a layout before fields were
// appended stored them, and returns it and its entry count. The dropped
// bytes must be zero (the appended fields' "none").
func Truncate(t testing.TB, path string, valueSize uint32) (*ebpf.Map, int) {
	t.Helper()
	cur := open(t, path)
	defer cur.Close()
	key, val := make([]byte, cur.KeySize()), make([]byte, cur.ValueSize())
	var keys, vals [][]byte
	it := cur.Iterate()
	for it.Next(&key, &val) {
		if !bytes.Equal(val[valueSize:], make([]byte, len(val)-int(valueSize))) {
			t.Fatalf("%s: entry %x has appended fields set; the old layout had none", path, key)
		}
		keys, vals = append(keys, bytes.Clone(key)), append(vals, bytes.Clone(val[:valueSize]))
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	name := filepath.Base(path)
	m := Replace(t, path, &ebpf.MapSpec{Name: name, Type: cur.Type(), KeySize: cur.KeySize(),
		ValueSize: valueSize, MaxEntries: cur.MaxEntries(), Flags: cur.Flags()})
	for i := range keys {
		if err := m.Update(keys[i], vals[i], ebpf.UpdateNoExist); err != nil {
			m.Close()
			t.Fatal(err)
		}
	}
	return m, len(keys)
}

func open(t testing.TB, path string) *ebpf.Map {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
