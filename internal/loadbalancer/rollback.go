package loadbalancer

import (
	"cmp"
	"slices"

	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
)

// snapshot records the parts of st's model that plan is about to change,
// so unplan can put them back, and lists st in the apply.
func (r *Reconciler) snapshot(st *frontendState, remove, created bool) *planned {
	ws := len(r.b.oldWants)
	r.b.oldWants = append(r.b.oldWants, st.wants...)
	r.b.planned = append(r.b.planned, planned{
		st: st, remove: remove, created: created,
		owner: st.owner, revNat: st.revNat, revKnown: st.revKnown,
		heldLen: len(st.held), wantStart: ws, wantEnd: len(r.b.oldWants), rangesLen: len(st.ranges),
	})
	return &r.b.planned[len(r.b.planned)-1]
}

// unplan puts the model of every frontend of the apply back as snapshot
// found it. It does not write: the maps must already hold the old state.
func (r *Reconciler) unplan() {
	for i := range r.b.planned {
		r.unplanOne(&r.b.planned[i])
	}
}

// unplanOne gives back the references and state counts plan took for p,
// and the rev-NAT ID it allocated. What nothing holds any more is queued,
// for collect to delete after the slots naming it are gone.
func (r *Reconciler) unplanOne(p *planned) {
	st := p.st
	r.unwant(st)
	st.wants = append(st.wants[:0], r.b.oldWants[p.wantStart:p.wantEnd]...)
	for _, w := range st.wants {
		w.e.wanted[w.state]++
	}
	for _, e := range st.held[p.heldLen:] {
		r.release(e)
	}
	clear(st.held[p.heldLen:])
	st.held = st.held[:p.heldLen]
	// Keys plan added may have been written: delete them, before the
	// rev-NAT ID they name can be freed.
	if len(st.ranges) > p.rangesLen {
		r.pendingRanges = append(r.pendingRanges, st.ranges[p.rangesLen:]...)
		st.ranges = st.ranges[:p.rangesLen]
	}
	if st.revNat != p.revNat {
		r.queueRevNat(st.revNat)
	}
	st.owner, st.revNat, st.revKnown = p.owner, p.revNat, p.revKnown
	if p.created {
		delete(r.fes, st.key)
	}
}

// rollback holds the services-map writes that undo a failed apply.
type rollback struct {
	svcKeys  []lbmap.ServiceKey // slot 0 back to its old value
	svcVals  []lbmap.ServiceValue
	svcDels  []lbmap.ServiceKey // slot 0 of frontends that had none
	slotKeys []lbmap.ServiceKey // slots back to their old backend
	slotVals []lbmap.ServiceValue
	slotDels []lbmap.ServiceKey // slots the apply created
	beKeys   []uint32           // backends back to their old value
	beVals   []lbmap.Backend
	beEnts   []*backendEntry
}

func (rb *rollback) reset() {
	rb.svcKeys, rb.svcVals, rb.svcDels = rb.svcKeys[:0], rb.svcVals[:0], rb.svcDels[:0]
	rb.slotKeys, rb.slotVals, rb.slotDels = rb.slotKeys[:0], rb.slotVals[:0], rb.slotDels[:0]
	rb.beKeys, rb.beVals, rb.beEnts = rb.beKeys[:0], rb.beVals[:0], rb.beEnts[:0]
}

// undo puts the maps and the model back as they were before a failed
// writeMake, and deletes what the apply added and nothing else needs.
// svcTried says the slot-0 step ran, so any frontend's slot 0 may be new.
//
// The order keeps the datapath safe: slot 0 back to its old count first,
// then slots within it back to their old backends (which still exist),
// then the slots above it, then (collect) backends and rev-NAT entries
// nothing holds any more. All of these overwrite existing keys or delete,
// so undo never needs room, even in a full map. A frontend undo cannot put
// back exactly is forgotten instead (marked unknown), as is everything when
// a rollback write fails.
//
// Undoing is blind: when a batch's slot-0 call fails part-way, the slot 0s
// it did write are put back too, and written again by the one-at-a-time
// pass that follows. A frontend new in that batch is thus visible for the
// length of one failed call, then gone until its retry, possibly under
// other IDs (undo frees them). Knowing which slot 0s got in would take a
// lookup per frontend; a connection made to a frontend that new, in that
// window, on a full map, is not worth it.
func (r *Reconciler) undo(svcTried bool) error {
	r.planRollback(svcTried)
	if err := r.writeRollback(); err != nil {
		r.forget()
		return err
	}
	for i := range r.b.planned {
		if p := &r.b.planned[i]; p.stuck {
			r.forgetOne(p)
		} else {
			r.unplanOne(p)
		}
	}
	if err := r.restoreBackends(); err != nil {
		return err
	}
	return r.collect()
}

// planRollback lists the writes that put each frontend back. Removals
// write only after every slot 0, so a failed make has nothing of theirs
// to undo.
func (r *Reconciler) planRollback(svcTried bool) {
	b := &r.b
	for i := range b.planned {
		p := &b.planned[i]
		if p.remove {
			continue
		}
		if p.stuck = !r.restorable(p); p.stuck {
			continue
		}
		st := p.st
		if svcTried && p.svcWrite {
			if st.svcPresent {
				b.rb.svcKeys = append(b.rb.svcKeys, st.key)
				b.rb.svcVals = append(b.rb.svcVals, st.svc)
			} else {
				b.rb.svcDels = append(b.rb.svcDels, st.key)
			}
		}
		for _, k := range b.slotKeys[p.slotStart:p.slotEnd] {
			if old := st.slotAt(int(k.Slot)); old == 0 {
				b.rb.slotDels = append(b.rb.slotDels, k)
			} else {
				b.rb.slotKeys = append(b.rb.slotKeys, k)
				b.rb.slotVals = append(b.rb.slotVals, lbmap.ServiceValue{BackendID: old})
			}
		}
	}
}

// restorable says the model knows exactly what every slot p wrote held
// before: not after an earlier failed rollback, nor over a slot found in
// the maps holding something else than a backend ID.
func (r *Reconciler) restorable(p *planned) bool {
	if !p.st.known {
		return false
	}
	for _, k := range r.b.slotKeys[p.slotStart:p.slotEnd] {
		if p.st.slotAt(int(k.Slot)) == badSlot {
			return false
		}
	}
	return true
}

func (r *Reconciler) writeRollback() error {
	rb := &r.b.rb
	svc := r.maps.Services
	if len(rb.svcKeys) > 0 {
		if err := svc.Update(rb.svcKeys, rb.svcVals); err != nil {
			return err
		}
	}
	if len(rb.svcDels) > 0 {
		if err := svc.Delete(rb.svcDels); err != nil {
			return err
		}
	}
	if len(rb.slotKeys) > 0 {
		if err := svc.Update(rb.slotKeys, rb.slotVals); err != nil {
			return err
		}
	}
	if len(rb.slotDels) > 0 {
		return svc.Delete(rb.slotDels)
	}
	return nil
}

// restoreBackends writes back the old value of backends the apply changed
// (a state some frontend's new plan wanted) that are still held. Those
// nothing holds are left to collect; those whose old value is unknown stay
// unknown, so the next plan that touches them rewrites them.
func (r *Reconciler) restoreBackends() error {
	rb := &r.b.rb
	for i, e := range r.b.backendEnts {
		e.known = false
		if prev := r.b.backendPrev[i]; prev.known && e.refs > 0 {
			rb.beKeys = append(rb.beKeys, e.id)
			rb.beVals = append(rb.beVals, prev.value)
			rb.beEnts = append(rb.beEnts, e)
		}
	}
	if len(rb.beKeys) == 0 {
		return nil
	}
	if err := r.maps.Backends.Update(rb.beKeys, rb.beVals); err != nil {
		return err
	}
	for i, e := range rb.beEnts {
		e.value, e.known = rb.beVals[i], true
	}
	return nil
}

// fallbackOrder is the order in which applyEach tries changes one at a
// time: removals first, as they free room; then by how many new services
// entries each needs, fewest first, because filling a capacity with the
// smallest items first fits the most of them; ties in the given (key)
// order, so the outcome does not depend on map iteration.
func (r *Reconciler) fallbackOrder(changes []change) []change {
	type costed struct {
		c    change
		cost int
	}
	order := make([]costed, len(changes))
	for i, c := range changes {
		order[i] = costed{c, r.newEntries(c)}
	}
	slices.SortStableFunc(order, func(a, b costed) int { return cmp.Compare(a.cost, b.cost) })
	out := make([]change, len(order))
	for i, o := range order {
		out[i] = o.c
	}
	return out
}

// newEntries estimates how many services entries c adds: -1 for a
// removal, slot 0 and every slot for a frontend the maps lack (or that the
// model does not know), the growth in slots otherwise.
func (r *Reconciler) newEntries(c change) int {
	if !c.present {
		return -1
	}
	n := len(c.spec.Backends)
	st := r.fes[c.key]
	if st == nil || !st.known || !st.svcPresent {
		return 1 + n
	}
	return max(0, n-len(st.slots))
}
