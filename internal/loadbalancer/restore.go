package loadbalancer

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfmap"
	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
)

// contents is everything the maps hold, as sorted slices: a Resync every
// few minutes reads them whole, and Go maps of 100,000 entries (growth
// included) cost three times as much, on top of the agent's live heap.
type contents struct {
	services []entry[lbmap.ServiceKey, lbmap.ServiceValue] // compareKeys order: slot 0 first within each frontend
	backends []entry[uint32, lbmap.Backend]                // by ID
	revNat   []entry[uint32, lbmap.RevNat]                 // by ID
	ranges   []lbmap.SourceRangeKey                        // lbmap.CompareSourceRangeKeys order
}

// entry is one map entry.
type entry[K, V any] struct {
	k K
	v V
}

func (r *Reconciler) read() (contents, error) {
	var c contents
	var err error
	slots := 0 // what the model expects, to size the slices
	for _, st := range r.fes {
		slots += 1 + len(st.slots)
	}
	if c.services, err = readAll(r.maps.Services, slots); err != nil {
		return c, err
	}
	slices.SortFunc(c.services, func(a, b entry[lbmap.ServiceKey, lbmap.ServiceValue]) int { return compareKeys(a.k, b.k) })
	if c.backends, err = readAll(r.maps.Backends, len(r.byID)); err != nil {
		return c, err
	}
	slices.SortFunc(c.backends, func(a, b entry[uint32, lbmap.Backend]) int { return cmp.Compare(a.k, b.k) })
	if c.revNat, err = readAll(r.maps.RevNat, len(r.revUsed)); err != nil {
		return c, err
	}
	slices.SortFunc(c.revNat, func(a, b entry[uint32, lbmap.RevNat]) int { return cmp.Compare(a.k, b.k) })
	if r.maps.SourceRanges != nil {
		err := r.maps.SourceRanges.Range(func(k lbmap.SourceRangeKey, _ uint8) bool {
			c.ranges = append(c.ranges, k)
			return true
		})
		if err != nil {
			return c, fmt.Errorf("reading map %s: %w", r.maps.SourceRanges.Name(), err)
		}
		slices.SortFunc(c.ranges, lbmap.CompareSourceRangeKeys)
	}
	return c, nil
}

// readAll returns every entry of m, in a slice sized for about hint.
func readAll[K comparable, V any](m bpfmap.Map[K, V], hint int) ([]entry[K, V], error) {
	out := make([]entry[K, V], 0, hint+hint/16+16)
	err := m.Range(func(k K, v V) bool {
		out = append(out, entry[K, V]{k, v})
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("reading map %s: %w", m.Name(), err)
	}
	return out, nil
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

// flagTwins sets ServiceInternalTwin on every EXTERNAL entry the maps hold
// whose INTERNAL twin they hold too. Maps written by an agent that predates
// the flag have INTERNAL entries and no flags; this agent's programs look
// INTERNAL up only through the flag, so without it internal traffic would
// get the EXTERNAL (node-local) backends until the first full resync, which
// waits for every source. The old programs ignore the bit, so it can be
// written while they serve. Flags without a twin are left to Resync: the
// datapath falls back to EXTERNAL for them, as it should.
func (r *Reconciler) flagTwins() error {
	var keys []lbmap.ServiceKey
	var vals []lbmap.ServiceValue
	for key, st := range r.fes {
		if key.Scope != lbmap.ScopeInternal || !st.svcPresent {
			continue
		}
		ext := r.fes[externalTwin(key)]
		if ext == nil || !ext.svcPresent || ext.svc.Flags&lbmap.ServiceInternalTwin != 0 {
			continue
		}
		v := ext.svc
		v.Flags |= lbmap.ServiceInternalTwin
		keys, vals = append(keys, ext.key), append(vals, v)
	}
	if len(keys) == 0 {
		return nil
	}
	if err := r.maps.Services.Update(keys, vals); err != nil {
		return fmt.Errorf("flagging %d service entries with an internal twin: %w", len(keys), err)
	}
	for i, k := range keys {
		r.fes[k].svc = vals[i]
	}
	return nil
}

// adoptRanges gives each source-range key to the frontend of its rev-NAT
// ID; keys of no frontend are queued for deletion.
func (r *Reconciler) adoptRanges(keys []lbmap.SourceRangeKey) {
	if len(keys) == 0 {
		return
	}
	byRev := make(map[uint32]*frontendState, len(r.fes))
	for _, st := range r.fes {
		if st.revNat != 0 {
			byRev[st.revNat] = st
		}
	}
	for _, k := range keys {
		if st := byRev[k.RevNatID]; st != nil {
			st.ranges = append(st.ranges, k)
		} else {
			r.pendingRanges = append(r.pendingRanges, k)
		}
	}
}

func (r *Reconciler) adoptBackends(m []entry[uint32, lbmap.Backend]) {
	// In ID order, so of two IDs for one backend the lower one is kept.
	for _, be := range m {
		id, v := be.k, be.v
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

func (r *Reconciler) adoptServices(m []entry[lbmap.ServiceKey, lbmap.ServiceValue]) {
	revTaken := make(map[uint32]bool, len(r.fes))
	for _, st := range r.fes {
		revTaken[st.revNat] = true
	}
	var cur *frontendState
	for _, sv := range m { // slot 0 first within each frontend
		k, v := sv.k, sv.v
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

func (r *Reconciler) adoptRevNat(m []entry[uint32, lbmap.RevNat]) {
	for _, e := range m {
		if _, used := r.revUsed[e.k]; !used {
			r.revUsed[e.k] = false
		}
	}
	for _, st := range r.fes {
		if st.revNat != 0 {
			i, ok := slices.BinarySearchFunc(m, st.revNat, func(e entry[uint32, lbmap.RevNat], id uint32) int { return cmp.Compare(e.k, id) })
			st.revKnown = ok && m[i].v == revNatOf(st.key)
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
