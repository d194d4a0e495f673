package loadbalancer

import (
	"fmt"
	"slices"

	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
)

// contents is everything the three maps hold.
type contents struct {
	services map[lbmap.ServiceKey]lbmap.ServiceValue
	backends map[uint32]lbmap.Backend
	revNat   map[uint32]lbmap.RevNat
	ranges   map[lbmap.SourceRangeKey]uint8
}

func (r *Reconciler) read() (contents, error) {
	var c contents
	var err error
	if c.services, err = r.maps.Services.All(); err != nil {
		return c, fmt.Errorf("reading map %s: %w", r.maps.Services.Name(), err)
	}
	if c.backends, err = r.maps.Backends.All(); err != nil {
		return c, fmt.Errorf("reading map %s: %w", r.maps.Backends.Name(), err)
	}
	if c.revNat, err = r.maps.RevNat.All(); err != nil {
		return c, fmt.Errorf("reading map %s: %w", r.maps.RevNat.Name(), err)
	}
	if r.maps.SourceRanges != nil {
		if c.ranges, err = r.maps.SourceRanges.All(); err != nil {
			return c, fmt.Errorf("reading map %s: %w", r.maps.SourceRanges.Name(), err)
		}
	}
	return c, nil
}

// adopt makes the model's idea of the map contents what c says, keeping the
// IDs the model already gave out. Entries c has that the model lacks are
// adopted: a backend ID under its address unless another ID has it already,
// a frontend with its slots and its rev-NAT ID unless another frontend has
// that one. Slots take references on the IDs they name, so nothing they
// name is deleted or reused until the slots are rewritten.
func (r *Reconciler) adopt(c contents) {
	for _, st := range r.fes {
		st.known, st.svc, st.svcPresent, st.revKnown = true, lbmap.ServiceValue{}, false, false
		st.slots, st.stray = st.slots[:0], nil
		st.ranges = st.ranges[:0]
	}
	for _, e := range r.byID {
		e.known = false
	}
	r.adoptBackends(c.backends)
	r.adoptServices(c.services)
	r.adoptRevNat(c.revNat)
	r.adoptRanges(c.ranges)
}

// adoptRanges gives each source-range key to the frontend of its rev-NAT
// ID; keys of no frontend are queued for deletion.
func (r *Reconciler) adoptRanges(m map[lbmap.SourceRangeKey]uint8) {
	if len(m) == 0 {
		return
	}
	byRev := make(map[uint32]*frontendState, len(r.fes))
	for _, st := range r.fes {
		if st.revNat != 0 {
			byRev[st.revNat] = st
		}
	}
	keys := make([]lbmap.SourceRangeKey, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, lbmap.CompareSourceRangeKeys)
	for _, k := range keys {
		if st := byRev[k.RevNatID]; st != nil {
			st.ranges = append(st.ranges, k)
		} else {
			r.pendingRanges = append(r.pendingRanges, k)
		}
	}
}

func (r *Reconciler) adoptBackends(m map[uint32]lbmap.Backend) {
	// In ID order, so of two IDs for one backend the lower one is kept.
	for _, id := range sortedIDs(m) {
		v := m[id]
		e := r.byID[id]
		if e == nil {
			e = &backendEntry{id: id, key: keyOfValue(v)}
			if r.byKey[e.key] == nil && id != 0 && id <= maxID {
				e.keyed = true
				r.byKey[e.key] = e
			}
			r.byID[id] = e
		}
		e.value, e.known = v, true
	}
}

func (r *Reconciler) adoptServices(m map[lbmap.ServiceKey]lbmap.ServiceValue) {
	revTaken := make(map[uint32]bool, len(r.fes))
	for _, st := range r.fes {
		revTaken[st.revNat] = true
	}
	keys := sortedKeys(m) // slot 0 first within each frontend
	var cur *frontendState
	for _, k := range keys {
		v := m[k]
		fk := k
		fk.Slot = 0
		if cur == nil || cur.key != fk {
			cur = r.fes[fk]
			if cur == nil {
				cur = &frontendState{key: fk, known: true}
				r.fes[fk] = cur
			}
			r.markHeld(cur)
		}
		if k.Slot == 0 {
			cur.svc, cur.svcPresent = v, true
			if id := v.RevNatID; cur.revNat == 0 && id != 0 && id <= maxID && !revTaken[id] {
				cur.revNat, revTaken[id] = id, true
				if _, used := r.revUsed[id]; !used {
					r.revUsed[id] = false
				}
			}
			continue
		}
		id := v.BackendID
		if id == 0 || id > maxID {
			cur.setSlot(int(k.Slot), badSlot)
			continue
		}
		if v != (lbmap.ServiceValue{BackendID: id}) {
			cur.setSlot(int(k.Slot), badSlot)
		} else {
			cur.setSlot(int(k.Slot), id)
		}
		r.hold(cur, id)
	}
}

// hold gives st a reference on id, which one of its slots names. An ID the
// backends map lacks gets an unkeyed placeholder, so it is not reused while
// the slot names it.
func (r *Reconciler) hold(st *frontendState, id uint32) {
	e := r.byID[id]
	if e == nil {
		e = &backendEntry{id: id}
		r.byID[id] = e
	}
	if e.mark != r.mark {
		e.mark = r.mark
		e.refs++
		st.held = append(st.held, e)
	}
}

func (r *Reconciler) adoptRevNat(m map[uint32]lbmap.RevNat) {
	for id := range m {
		if _, used := r.revUsed[id]; !used {
			r.revUsed[id] = false
		}
	}
	for _, st := range r.fes {
		if st.revNat != 0 {
			v, ok := m[st.revNat]
			st.revKnown = ok && v == revNatOf(st.key)
		}
	}
}

// sweep queues for deletion every backend no frontend holds and every
// rev-NAT entry no frontend owns: what a full resync finds nobody wants.
func (r *Reconciler) sweep() {
	owned := make(map[uint32]bool, len(r.fes))
	for _, st := range r.fes {
		if st.revNat != 0 {
			owned[st.revNat] = true
		}
	}
	var revs []uint32
	for id, pending := range r.revUsed {
		if !pending && !owned[id] {
			revs = append(revs, id)
		}
	}
	slices.Sort(revs)
	for _, id := range revs {
		r.queueRevNat(id)
	}
	for _, id := range sortedIDs(r.byID) {
		if e := r.byID[id]; e.refs == 0 && !e.pending {
			e.pending = true
			r.pendingBackends = append(r.pendingBackends, e)
		}
	}
}

func sortedIDs[V any](m map[uint32]V) []uint32 {
	ids := make([]uint32, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}
