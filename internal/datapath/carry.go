package datapath

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/cilium/ebpf"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfmap"
	"github.com/fastpath-net/fastpath/internal/datapath/ctmap"
)

// carriable lists, per older layout version, the maps whose layout changed
// since it only by fields appended to their value whose zero value means
// "none". Load carries such a map over (a new map, every entry copied and
// zero-extended, pinned in place of the old) instead of refusing or
// recreating it, so established connections survive the upgrade. A version
// is listed only if every change since it is such an append: its other maps
// must be compatible as pinned, or Load refuses them as before.
//
// When a layout appends to a map's value, add the version it replaces here,
// and add the map, with its size in each older listed version, to their lists.
var carriable = map[uint32][]carry{
	// v6 appended ts_delta and ts_last to fp_ct_entry (72 -> 80 bytes).
	5: {appended[ctmap.Key, [72]byte, ctmap.Entry]("fp_ct")},
}

// carry is one map that can be carried from an older layout.
type carry struct {
	name         string
	oldValueSize uint32
	// copy writes from's entries, zero-extended, into to; onlyMissing
	// skips keys to already holds (the late pass, when to is live).
	copy func(from, to *ebpf.Map, onlyMissing bool) (int, error)
}

// appended declares map name, whose pinned value is Old and whose value in
// this build is New: Old's bytes followed by zeros.
func appended[K comparable, Old, New any](name string) carry {
	var o Old
	return carry{
		name:         name,
		oldValueSize: uint32(binary.Size(o)),
		copy: func(from, to *ebpf.Map, onlyMissing bool) (int, error) {
			return copyAppended[K, Old, New](from, to, name, onlyMissing)
		},
	}
}

// copyBatch bounds the entries held between two batch updates.
const copyBatch = 4096

func copyAppended[K comparable, Old, New any](from, to *ebpf.Map, name string, onlyMissing bool) (int, error) {
	src := bpfmap.NewKernel[K, Old](from, name+" (pinned, old layout)")
	dst := bpfmap.NewKernel[K, New](to, name)
	var keys []K
	var vals []New
	n := 0
	var werr error
	flush := func() {
		werr = dst.Update(keys, vals)
		n += len(keys)
		keys, vals = keys[:0], vals[:0]
	}
	err := src.Range(func(k K, o Old) bool {
		v, err := extend[Old, New](o)
		if err != nil {
			werr = fmt.Errorf("map %s: %w", name, err)
			return false
		}
		if onlyMissing {
			// The new programs own the new map by now: never overwrite
			// what they wrote.
			err := to.Update(&k, &v, ebpf.UpdateNoExist)
			switch {
			case err == nil:
				n++
			case !errors.Is(err, ebpf.ErrKeyExist):
				werr = fmt.Errorf("map %s: add %v: %w", name, k, err)
			}
			return werr == nil
		}
		keys, vals = append(keys, k), append(vals, v)
		if len(keys) == copyBatch {
			flush()
		}
		return werr == nil
	})
	if err == nil && werr == nil && len(keys) > 0 {
		flush()
	}
	return n, errors.Join(err, werr)
}

// extend returns o's bytes followed by zeros as a New.
func extend[Old, New any](o Old) (New, error) {
	var v New
	buf := make([]byte, binary.Size(v))
	old, err := binary.Append(nil, binary.NativeEndian, o)
	if err != nil {
		return v, err
	}
	if len(old) > len(buf) {
		return v, fmt.Errorf("old value of %d bytes is longer than the new one (%d)", len(old), len(buf))
	}
	copy(buf, old)
	err = binary.Read(bytes.NewReader(buf), binary.NativeEndian, &v)
	return v, err
}

// Carried reports one map carried over from an older layout.
type Carried struct {
	Map         string
	FromLayout  uint32
	Entries     int           // copied before the new programs loaded
	Took        time.Duration // to copy them and pin the new map
	LateEntries int           // added by FinishCarry: created meanwhile by the old programs
}

// carrying is a map carried by this Load, until FinishCarry.
type carrying struct {
	Carried
	c        carry
	old, new *ebpf.Map
}

// fits says whether pinned is c's old layout of spec: the same but for
// the value, which is c's old size, shorter than spec's.
func (c carry) fits(spec *ebpf.MapSpec, pinned *ebpf.Map) bool {
	if c.name == "" || c.oldValueSize >= spec.ValueSize {
		return false
	}
	old := spec.Copy()
	old.ValueSize = c.oldValueSize
	return old.Compatible(pinned) == nil
}

// carryMap creates the map of spec, copies the entries of the one pinned at
// path into it, and pins it there in its place. The old map stays open
// until FinishCarry: the old programs keep using it until they are
// replaced.
func (m *migration) carryMap(c carry, spec *ebpf.MapSpec, path string) error {
	start := time.Now()
	pinned, err := ebpf.LoadPinnedMap(path, nil)
	if err != nil {
		return fmt.Errorf("carry %s: %w", c.name, err)
	}
	if !c.fits(spec, pinned) { // changed since classify
		pinned.Close()
		return fmt.Errorf("carry %s: the pinned map changed during the load", c.name)
	}
	want := spec.Copy()
	want.Pinning = ebpf.PinNone
	nm, err := ebpf.NewMap(want)
	if err != nil {
		pinned.Close()
		return fmt.Errorf("carry %s to layout v%d: create the new map: %w", c.name, MapLayoutVersion, err)
	}
	n, err := c.copy(pinned, nm, false)
	if err == nil {
		err = replacePin(nm, path)
	}
	if err != nil {
		pinned.Close()
		nm.Close()
		return fmt.Errorf("carry %s to layout v%d (the pinned map is left as it was): %w", c.name, MapLayoutVersion, err)
	}
	m.carried = append(m.carried, &carrying{
		Carried: Carried{Map: c.name, FromLayout: m.from, Entries: n, Took: time.Since(start)},
		c:       c, old: pinned, new: nm,
	})
	return nil
}

// replacePin pins m at path in place of what is pinned there, in one
// rename: the path never lacks a map, so a crash leaves old or new.
func replacePin(m *ebpf.Map, path string) error {
	tmp := path + "-carry" // bpffs refuses names with dots
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale %s: %w", tmp, err)
	}
	if err := m.Pin(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("pin in place of %s: %w", path, err)
	}
	return nil
}

// Carried reports the maps Load carried over from an older layout.
func (d *Datapath) Carried() []Carried {
	out := make([]Carried, len(d.carried))
	for i, c := range d.carried {
		out[i] = c.Carried
	}
	return out
}

// FinishCarry is for after the new programs are attached: the old ones
// served on the old maps until then, so it copies the entries they created
// meanwhile (keys the new map lacks), then lets the old maps go. A second
// call does nothing.
func (d *Datapath) FinishCarry() ([]Carried, error) {
	var errs []error
	out := make([]Carried, 0, len(d.carried))
	for _, c := range d.carried {
		n, err := c.c.copy(c.old, c.new, true)
		c.LateEntries = n
		if err != nil {
			errs = append(errs, fmt.Errorf("carry %s: entries created during the upgrade: %w", c.Map, err))
		}
		out = append(out, c.Carried)
	}
	d.closeCarried()
	return out, errors.Join(errs...)
}

func (d *Datapath) closeCarried() {
	for _, c := range d.carried {
		c.old.Close()
		c.new.Close()
	}
	d.carried = nil
}
