package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
)

// MapLayoutVersion is FP_MAP_LAYOUT_VERSION of bpf/include/fastpath.h (a
// test keeps them equal). It is pinned as fp_layout next to the maps, so an
// agent tells pins of another layout from its own even where the sizes
// match.
const MapLayoutVersion = 6

// layoutMap is the pin holding the version of the maps beside it.
const layoutMap = "fp_layout"

// migration decides what happens to pins whose layout differs from this
// agent's: refused (the default: the agent exits, the pinned datapath keeps
// serving with the old programs), or, with recreate, unpinned so that the
// load creates them anew. Unpinning does not free a map: the old programs,
// still attached through their pinned links, keep using it until the new
// programs replace them.
type migration struct {
	recreate bool
	dropped  []string // maps unpinned to be created anew
	// from is the pinned layout when it is an older one whose changed
	// maps can be carried (carriable, carry.go), and carries those maps.
	from    uint32
	carries []carry
	carried []*carrying
}

// checkVersion compares the pinned layout version with ours.
func (m *migration) checkVersion(mapDir string) error {
	v, err := readLayout(mapDir)
	if err != nil || v == 0 || v == MapLayoutVersion {
		return err
	}
	if c, ok := carriable[v]; ok {
		m.from, m.carries = v, c
		return nil
	}
	if !m.recreate {
		return fmt.Errorf("the maps pinned under %s are layout v%d, this agent's are v%d: %s", mapDir, v, MapLayoutVersion, mismatchFix)
	}
	return nil
}

const mismatchFix = "start with --map-layout-mismatch=recreate to create the changed maps anew " +
	"(the pinned datapath serves until the new one is programmed; a recreated fp_ct loses established connections), " +
	"or run the agent version (and map sizes) that created them"

// lbGroup are the maps that name each other's IDs (a service slot names a
// backend ID, a frontend its rev-NAT ID, affinity and source ranges both):
// one recreated means all recreated, or the old programs, serving until
// the new ones attach, would read IDs of the new maps in the old.
var lbGroup = []string{"fp_services", "fp_backends", "fp_rev_nat", "fp_source_ranges", "fp_affinity"}

// prepare checks each pinned map of cs against its spec, and carries,
// unpins or refuses those that differ. Nothing changes unless every
// difference is carriable or (with recreate) may be recreated; tc_lb, the
// first object loaded, declares every pinned map (a test keeps it so), so a
// refused upgrade leaves all the pins as they were.
func (m *migration) prepare(cs *ebpf.CollectionSpec, mapDir string) error {
	carry, drop, err := m.classify(cs, mapDir)
	if err != nil {
		return err
	}
	for _, name := range carry {
		if err := m.carryMap(m.carryOf(name), cs.Maps[name], filepath.Join(mapDir, name)); err != nil {
			return err
		}
	}
	if slices.ContainsFunc(drop, func(n string) bool { return slices.Contains(lbGroup, n) }) {
		for _, n := range lbGroup {
			if _, ok := cs.Maps[n]; ok && !slices.Contains(drop, n) {
				drop = append(drop, n)
			}
		}
	}
	slices.Sort(drop)
	for _, name := range drop {
		path := filepath.Join(mapDir, name)
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("unpin %s to recreate it: %w", path, err)
		} else if err == nil {
			m.dropped = append(m.dropped, name)
		}
	}
	return nil
}

// classify sorts the pinned maps of cs that differ from their spec into
// the ones to carry and the ones to recreate, or refuses them.
func (m *migration) classify(cs *ebpf.CollectionSpec, mapDir string) (carry, drop []string, err error) {
	var bad []string
	for name, spec := range cs.Maps {
		if spec.Pinning != ebpf.PinByName {
			continue
		}
		path := filepath.Join(mapDir, name)
		pinned, err := ebpf.LoadPinnedMap(path, nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("pinned map %s: %w", path, err)
		}
		err = spec.Compatible(pinned)
		carriable := err != nil && m.carryOf(name).fits(spec, pinned)
		pinned.Close()
		switch {
		case err == nil:
		case carriable:
			carry = append(carry, name)
		case !m.recreate:
			bad = append(bad, fmt.Sprintf("%s (%v)", name, err))
		default:
			drop = append(drop, name)
		}
	}
	if len(bad) > 0 {
		slices.Sort(bad)
		return nil, nil, fmt.Errorf("pinned maps under %s have another layout or size than this agent wants: %s; %s",
			mapDir, strings.Join(bad, ", "), mismatchFix)
	}
	slices.Sort(carry)
	return carry, drop, nil
}

// carryOf is the carriable entry of map name for the pinned layout; its
// zero value fits nothing.
func (m *migration) carryOf(name string) carry {
	for _, c := range m.carries {
		if c.name == name {
			return c
		}
	}
	return carry{}
}

// readLayout returns the pinned layout version, 0 when none is pinned (no
// pins yet, or pins older than fp_layout).
func readLayout(mapDir string) (uint32, error) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(mapDir, layoutMap), &ebpf.LoadPinOptions{ReadOnly: true})
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("%s: %w", layoutMap, err)
	}
	defer m.Close()
	var v uint32
	if err := m.Lookup(uint32(0), &v); err != nil {
		return 0, fmt.Errorf("%s: %w", layoutMap, err)
	}
	return v, nil
}

// writeLayout pins (or updates) fp_layout with version v.
func writeLayout(mapDir string, v uint32) error {
	path := filepath.Join(mapDir, layoutMap)
	m, err := ebpf.LoadPinnedMap(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		m, err = ebpf.NewMap(&ebpf.MapSpec{Name: layoutMap, Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
		if err == nil {
			err = m.Pin(path)
		}
	}
	if err != nil {
		return fmt.Errorf("%s: %w", layoutMap, err)
	}
	defer m.Close()
	if err := m.Update(uint32(0), v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("%s: %w", layoutMap, err)
	}
	return nil
}
