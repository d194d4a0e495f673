package loadbalancer

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
)

// ReconcilerOptions configures a Reconciler. The zero value is ready to use.
type ReconcilerOptions struct {
	// TrackGoneUDP makes the reconciler remember the UDP backends that
	// leave frontends, for TakeGoneUDP; whoever sets it must call that
	// after each sync.
	TrackGoneUDP bool
}

// Reconciler makes the load-balancer maps hold what a Table wants, writing
// only what differs. Use one Reconciler per Table and per set of maps.
//
// The datapath reads the maps while they change, so every write follows an
// order that never shows it a half-made frontend:
//
//  1. backends and rev-NAT entries the new state needs;
//  2. slots 1..n (a growing frontend's new slots are beyond its old count,
//     so unseen; a shrinking one's still name existing backends);
//  3. slot 0 (count, rev-NAT ID, flags), or its deletion for a removed
//     frontend, which makes the frontend unreachable before its slots go;
//     INTERNAL entries are written before the EXTERNAL ones whose flag
//     (ServiceInternalTwin) leads to them, and deleted after it is cleared;
//  4. slots above the new count;
//  5. backends no frontend references any more;
//  6. rev-NAT entries of removed frontends, last, so replies of flows
//     already set up are translated for as long as possible.
//
// Each step is one batch call per map for all frontends being synced.
//
// When a call of steps 1-3 fails, the apply is undone (see undo): every
// frontend in it is put back as it was, and whatever it added that its old
// state does not need (slots above its old count, backends and a rev-NAT
// entry only it took) is deleted. A failed frontend thus keeps its old
// state, working, and holds no room another frontend could use. Then the
// frontends are redone one at a time, in fallbackOrder: removals first,
// then fewest new service entries first, so when not everything fits, as
// many whole frontends as possible are programmed. Those that fail again
// are undone again and stay dirty; the next Sync retries them, and they get
// in once room is made. A failure in step 3's deletes or step 4 (deletes
// only, never for lack of room) leaves the new state live and the frontend
// unknown, to be rewritten whole by the retry.
type Reconciler struct {
	maps lbmap.Maps
	opts ReconcilerOptions

	mu    sync.Mutex
	fes   map[lbmap.ServiceKey]*frontendState
	byID  map[uint32]*backendEntry
	byKey map[backendKey]*backendEntry
	// revUsed holds every rev-NAT ID in use or in the map; the value says
	// it is queued for deletion.
	revUsed    map[uint32]bool
	backendIDs idAlloc
	revNatIDs  idAlloc

	pendingBackends []*backendEntry
	pendingRevNat   []uint32
	// pendingRanges are source-range keys to delete, before any rev-NAT
	// ID is freed: a reused ID must not find another frontend's ranges.
	pendingRanges []lbmap.SourceRangeKey
	// gone are UDP backends that left a frontend since TakeGoneUDP.
	gone []GoneBackend

	mark    uint64 // epoch for backendEntry.mark
	applyNo uint64 // epoch for backendEntry.touched
	changes []change
	b       batch
}

// NewReconciler returns a reconciler that believes the maps are empty; call
// Restore first when they may hold an earlier agent's state.
func NewReconciler(maps lbmap.Maps, opts ReconcilerOptions) *Reconciler {
	r := &Reconciler{maps: maps, opts: opts}
	r.reset()
	return r
}

func (r *Reconciler) reset() {
	r.fes = make(map[lbmap.ServiceKey]*frontendState)
	r.byID = make(map[uint32]*backendEntry)
	r.byKey = make(map[backendKey]*backendEntry)
	r.revUsed = make(map[uint32]bool)
	r.backendIDs = newIDAlloc()
	r.revNatIDs = newIDAlloc()
	r.pendingBackends = nil
	r.pendingRevNat = nil
	r.pendingRanges = nil
}

// Restore reads the maps, as an earlier agent left them, and adopts what
// they hold: backend IDs by address, port and protocol, rev-NAT IDs by
// frontend. A later Sync of the same desired state then writes nothing, and
// established connections keep their IDs. Frontends the maps hold and no
// source wants stay until Resync removes them. Call it before any Sync, and
// before this agent's programs take traffic: it also flags the EXTERNAL
// entries whose INTERNAL twin the maps hold (see flagTwins).
func (r *Reconciler) Restore() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	m, err := r.read()
	if err != nil {
		return err
	}
	r.reset()
	r.adopt(m)
	return r.flagTwins()
}

// Sync applies the frontends that changed in t since the last Sync or
// Resync. Frontends it fails to write stay dirty for the next Sync and are
// named in the error (errors.Is(err, bpfmap.ErrFull) tells a full map);
// other frontends are written regardless.
func (r *Reconciler) Sync(t *Table) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changes = t.takeDirty(r.changes[:0])
	err := r.run(t, r.changes, false)
	r.dropScratch()
	return err
}

// Resync compares everything t wants with what the maps hold and repairs
// every difference, still writing only the entries that differ. It removes
// frontends, backends and rev-NAT entries nothing wants, so call it only
// once every source has delivered its full state (after Restore, at start,
// and then periodically to undo drift).
func (r *Reconciler) Resync(t *Table) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	m, err := r.read()
	if err != nil {
		return err
	}
	changes := t.takeAll()
	r.adopt(m)
	wanted := make(map[lbmap.ServiceKey]struct{}, len(changes))
	for _, c := range changes {
		wanted[c.key] = struct{}{}
	}
	for key := range r.fes {
		if _, ok := wanted[key]; !ok {
			changes = append(changes, change{key: key})
		}
	}
	slices.SortFunc(changes, func(a, b change) int { return compareKeys(a.key, b.key) })
	err = r.run(t, changes, true)
	r.dropScratch()
	return err
}

// dropScratch lets go of the table's old backend lists, and of the buffers
// of a big sync, which small syncs do not need.
func (r *Reconciler) dropScratch() {
	clear(r.changes)
	if cap(r.changes) > 4096 {
		r.changes = nil
	}
	if cap(r.b.slotKeys) > 4096 || cap(r.b.ids) > 4096 || cap(r.b.oldWants) > 4096 {
		r.b = batch{}
	}
}

// run applies changes in one batch; if that fails, it applies them one at
// a time, so one frontend's failure holds back only itself.
func (r *Reconciler) run(t *Table, changes []change, sweep bool) error {
	var errs []error
	if len(changes) > 0 && r.apply(changes) != nil {
		errs = r.applyEach(t, changes)
	}
	if sweep {
		r.sweep()
	}
	if err := r.collect(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (r *Reconciler) applyEach(t *Table, changes []change) []error {
	var errs []error
	for _, c := range r.fallbackOrder(changes) {
		err := r.apply([]change{c})
		if err == nil {
			err = r.collect()
		}
		if err == nil {
			continue
		}
		owner := c.owner
		if st := r.fes[c.key]; !c.present && st != nil {
			owner = st.owner
		}
		errs = append(errs, &FrontendError{Service: owner, Frontend: frontendName(c.key), Err: err})
		t.markDirty(c.key)
	}
	return errs
}

// apply plans and writes steps 1-4 for changes. When steps 1-3 fail it
// undoes them; when the deletes of steps 3-4 fail, the new state is live
// and the frontends are marked unknown, so a retry rewrites them whole.
func (r *Reconciler) apply(changes []change) error {
	r.b.reset()
	// One allocation: grown by append, 50,000 records cost five times that.
	r.b.planned = slices.Grow(r.b.planned, len(changes))
	r.applyNo++
	for i := range changes {
		if err := r.plan(&changes[i]); err != nil {
			r.unplan() // nothing was written
			return err
		}
	}
	r.planBackends()
	if at, err := r.writeMake(); err != nil {
		if uerr := r.undo(at == stepServices); uerr != nil {
			return errors.Join(err, fmt.Errorf("rolling back: %w", uerr))
		}
		return err
	}
	if err := r.writeDeletes(); err != nil {
		r.forget()
		return err
	}
	r.commit()
	return nil
}

// planned is one frontend of an apply.
type planned struct {
	st         *frontendState
	remove     bool
	start, end int // its slot IDs in batch.ids
	val        lbmap.ServiceValue

	// ranges are its desired source-range keys; st.ranges[rangesLen:] are
	// the keys plan added, for unplan.
	ranges    []lbmap.SourceRangeKey
	rangesLen int

	// Where its writes are, for undo: slot writes in batch.slotKeys, and
	// whether slot 0 is in batch.svcKeys.
	slotStart, slotEnd int
	svcWrite           bool
	stuck              bool // undo cannot put it back exactly; forgotten instead

	// The model before plan changed it, for unplan.
	created            bool // plan made st; unplan drops it
	owner              ServiceName
	revNat             uint32
	revKnown           bool
	heldLen            int // st.held[heldLen:] are references plan took
	wantStart, wantEnd int // its old wants in batch.oldWants
}

// batch holds one apply's writes, per step and map, and is reused.
type batch struct {
	planned []planned
	ids     []uint32
	touched []*backendEntry

	backendKeys []uint32
	backendVals []lbmap.Backend
	backendEnts []*backendEntry
	revKeys     []uint32
	revVals     []lbmap.RevNat
	rangeKeys   []lbmap.SourceRangeKey
	slotKeys    []lbmap.ServiceKey
	slotVals    []lbmap.ServiceValue
	svcKeys     []lbmap.ServiceKey
	svcVals     []lbmap.ServiceValue
	svcDels     []lbmap.ServiceKey
	slotDels    []lbmap.ServiceKey

	// For undo: old wants of every planned frontend, what the backends map
	// held for backendEnts, and the rollback writes.
	oldWants    []want
	backendPrev []backendPrev
	rb          rollback
}

// backendPrev is a backend entry's model before an apply wrote it.
type backendPrev struct {
	value lbmap.Backend
	known bool
}

func (b *batch) reset() {
	b.planned, b.ids, b.touched = b.planned[:0], b.ids[:0], b.touched[:0]
	b.backendKeys, b.backendVals, b.backendEnts = b.backendKeys[:0], b.backendVals[:0], b.backendEnts[:0]
	b.revKeys, b.revVals = b.revKeys[:0], b.revVals[:0]
	b.rangeKeys = b.rangeKeys[:0]
	b.slotKeys, b.slotVals = b.slotKeys[:0], b.slotVals[:0]
	b.svcKeys, b.svcVals = b.svcKeys[:0], b.svcVals[:0]
	b.svcDels, b.slotDels = b.svcDels[:0], b.slotDels[:0]
	b.oldWants, b.backendPrev = b.oldWants[:0], b.backendPrev[:0]
	b.rb.reset()
}

func slotKey(key lbmap.ServiceKey, n int) lbmap.ServiceKey {
	key.Slot = uint16(n)
	return key
}

func (r *Reconciler) plan(c *change) error {
	st := r.fes[c.key]
	if !c.present {
		if st != nil {
			r.planRemoval(st)
		}
		return nil
	}
	created := st == nil
	if created {
		st = &frontendState{key: c.key, known: true}
		r.fes[c.key] = st
	}
	p := r.snapshot(st, false, created)
	st.owner = c.owner
	if err := r.planRevNat(st); err != nil {
		return err
	}
	r.planRanges(p, c.spec.SourceRanges)
	p.start = len(r.b.ids)
	if err := r.planBackendRefs(st, c.spec.Backends); err != nil {
		return err
	}
	p.end = len(r.b.ids)
	p.val = serviceValue(*c.spec, st.revNat, p.end-p.start)
	if c.twin {
		p.val.Flags |= lbmap.ServiceInternalTwin
	}
	p.slotStart = len(r.b.slotKeys)
	p.svcWrite = r.planSlots(st, r.b.ids[p.start:p.end], p.val)
	p.slotEnd = len(r.b.slotKeys)
	return nil
}

func serviceValue(spec FrontendSpec, revNat uint32, count int) lbmap.ServiceValue {
	v := lbmap.ServiceValue{Count: uint16(count), Flags: spec.Type.flags(), RevNatID: revNat}
	if spec.AffinityTimeout > 0 {
		v.Flags |= lbmap.ServiceAffinity
		v.AffinityTimeout = uint32(spec.AffinityTimeout / time.Second)
	}
	if spec.ExtLocal {
		v.Flags |= lbmap.ServiceExtLocal
	}
	if len(spec.SourceRanges) > 0 {
		v.Flags |= lbmap.ServiceSourceRanges
	}
	return v
}

// planRanges lists the source-range keys p's frontend needs and the map
// lacks. They are written before slot 0, so the datapath never sees the
// flag without its ranges; st.ranges takes them at once, as the map may
// hold them from now on, and commit queues the ones no longer wanted.
func (r *Reconciler) planRanges(p *planned, ranges []netip.Prefix) {
	st := p.st
	p.ranges = nil
	for _, pfx := range ranges {
		k := lbmap.SourceRangeKeyOf(st.revNat, pfx)
		if slices.Contains(p.ranges, k) {
			continue
		}
		p.ranges = append(p.ranges, k)
		if !slices.Contains(st.ranges, k) {
			st.ranges = append(st.ranges, k)
			r.b.rangeKeys = append(r.b.rangeKeys, k)
		}
	}
}

func (r *Reconciler) planRevNat(st *frontendState) error {
	if st.revNat == 0 {
		id, err := r.revNatIDs.get(func(id uint32) bool { _, used := r.revUsed[id]; return used })
		if err != nil {
			return fmt.Errorf("rev-NAT ID: %w", err)
		}
		st.revNat, st.revKnown = id, false
		r.revUsed[id] = false
	}
	if !st.revKnown {
		r.b.revKeys = append(r.b.revKeys, st.revNat)
		r.b.revVals = append(r.b.revVals, revNatOf(st.key))
	}
	return nil
}

// planBackendRefs finds or allocates the ID of every backend, takes a
// reference for st on each, counts the states it wants, and appends the
// IDs to b.ids.
func (r *Reconciler) planBackendRefs(st *frontendState, backends []Backend) error {
	r.unwant(st)
	r.markHeld(st)
	for _, be := range backends {
		e, err := r.backendFor(keyOfBackend(be))
		if err != nil {
			return err
		}
		if e.mark != r.mark {
			e.mark = r.mark
			e.refs++
			st.held = append(st.held, e)
		}
		e.wanted[be.State]++
		st.wants = append(st.wants, want{e: e, state: be.State})
		r.touch(e)
		r.b.ids = append(r.b.ids, e.id)
	}
	return nil
}

// planSlots lists the slot writes and deletes st needs, and says whether
// slot 0 is among the writes.
func (r *Reconciler) planSlots(st *frontendState, ids []uint32, val lbmap.ServiceValue) bool {
	for i, id := range ids {
		if !st.known || st.slotAt(i+1) != id {
			r.b.slotKeys = append(r.b.slotKeys, slotKey(st.key, i+1))
			r.b.slotVals = append(r.b.slotVals, lbmap.ServiceValue{BackendID: id})
		}
	}
	svcWrite := !st.known || !st.svcPresent || st.svc != val
	if svcWrite {
		r.b.svcKeys = append(r.b.svcKeys, st.key)
		r.b.svcVals = append(r.b.svcVals, val)
	}
	r.planSlotDeletes(st, len(ids))
	return svcWrite
}

// planSlotDeletes deletes the slots above n that exist or may exist.
func (r *Reconciler) planSlotDeletes(st *frontendState, n int) {
	for i := n; i < len(st.slots); i++ {
		if !st.known || st.slots[i] != 0 {
			r.b.slotDels = append(r.b.slotDels, slotKey(st.key, i+1))
		}
	}
	for _, s := range sortedStray(st.stray) {
		if int(s) > n && int(s) > len(st.slots) {
			r.b.slotDels = append(r.b.slotDels, slotKey(st.key, int(s)))
		}
	}
}

func sortedStray(m map[uint16]uint32) []uint16 {
	if len(m) == 0 {
		return nil
	}
	out := make([]uint16, 0, len(m))
	for s := range m {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

func (r *Reconciler) planRemoval(st *frontendState) {
	r.snapshot(st, true, false)
	r.unwant(st)
	if !st.known || st.svcPresent {
		r.b.svcDels = append(r.b.svcDels, st.key)
	}
	r.planSlotDeletes(st, 0)
}

// unwant takes back the state counts of st's last plan.
func (r *Reconciler) unwant(st *frontendState) {
	for _, w := range st.wants {
		w.e.wanted[w.state]--
		r.touch(w.e)
	}
	st.wants = st.wants[:0]
}

// markHeld starts a new epoch and marks the entries st holds.
func (r *Reconciler) markHeld(st *frontendState) {
	r.mark++
	for _, e := range st.held {
		e.mark = r.mark
	}
}

func (r *Reconciler) touch(e *backendEntry) {
	if e.touched != r.applyNo {
		e.touched = r.applyNo
		r.b.touched = append(r.b.touched, e)
	}
}

func (r *Reconciler) backendFor(key backendKey) (*backendEntry, error) {
	if e := r.byKey[key]; e != nil {
		return e, nil
	}
	id, err := r.backendIDs.get(func(id uint32) bool { _, used := r.byID[id]; return used })
	if err != nil {
		return nil, fmt.Errorf("backend ID: %w", err)
	}
	e := &backendEntry{id: id, key: key, keyed: true}
	r.byID[id] = e
	r.byKey[key] = e
	return e, nil
}

// planBackends writes every touched backend some frontend wants whose map
// entry is missing, unknown or in another state.
func (r *Reconciler) planBackends() {
	for _, e := range r.b.touched {
		v, wanted := e.desired()
		if !wanted || (e.known && e.value == v) {
			continue
		}
		r.b.backendKeys = append(r.b.backendKeys, e.id)
		r.b.backendVals = append(r.b.backendVals, v)
		r.b.backendEnts = append(r.b.backendEnts, e)
		r.b.backendPrev = append(r.b.backendPrev, backendPrev{value: e.value, known: e.known})
	}
}

// step names a write of steps 1-3, to say which one failed.
type step int

const (
	stepBackends step = iota + 1
	stepRanges
	stepRevNat
	stepSlots
	stepServices // slot 0 of every frontend that is not removed
)

// writeMake runs steps 1-3 up to slot 0, one call per map and step,
// skipping empty ones, and says which step failed.
func (r *Reconciler) writeMake() (step, error) {
	b := &r.b
	if len(b.backendKeys) > 0 {
		if err := r.maps.Backends.Update(b.backendKeys, b.backendVals); err != nil {
			return stepBackends, err
		}
	}
	if len(b.rangeKeys) > 0 {
		if err := r.updateRanges(b.rangeKeys); err != nil {
			return stepRanges, err
		}
	}
	if len(b.revKeys) > 0 {
		if err := r.maps.RevNat.Update(b.revKeys, b.revVals); err != nil {
			return stepRevNat, err
		}
	}
	if len(b.slotKeys) > 0 {
		if err := r.maps.Services.Update(b.slotKeys, b.slotVals); err != nil {
			return stepSlots, err
		}
	}
	if len(b.svcKeys) > 0 {
		internalFirst(b.svcKeys, b.svcVals)
		if err := r.maps.Services.Update(b.svcKeys, b.svcVals); err != nil {
			return stepServices, err
		}
	}
	return 0, nil
}

// internalFirst moves the INTERNAL entries of a slot-0 write ahead of the
// EXTERNAL ones, keeping the order within each: an INTERNAL entry is then
// in the map before its twin's flag sends internal traffic to it. (Removals
// go the other way by themselves: the flag is cleared in this write, the
// INTERNAL entry deleted after it.) Only a write with INTERNAL entries
// allocates.
func internalFirst(keys []lbmap.ServiceKey, vals []lbmap.ServiceValue) {
	var inKeys []lbmap.ServiceKey
	var inVals []lbmap.ServiceValue
	w := len(keys)
	for i := len(keys) - 1; i >= 0; i-- {
		if keys[i].Scope == lbmap.ScopeInternal {
			inKeys, inVals = append(inKeys, keys[i]), append(inVals, vals[i])
			continue
		}
		w--
		keys[w], vals[w] = keys[i], vals[i]
	}
	for j := range inKeys {
		keys[j], vals[j] = inKeys[len(inKeys)-1-j], inVals[len(inVals)-1-j]
	}
}

// writeDeletes runs the rest of step 3 (slot 0 of removed frontends) and
// step 4.
func (r *Reconciler) writeDeletes() error {
	b := &r.b
	if len(b.svcDels) > 0 {
		if err := r.maps.Services.Delete(b.svcDels); err != nil {
			return err
		}
	}
	if len(b.slotDels) > 0 {
		if err := r.maps.Services.Delete(b.slotDels); err != nil {
			return err
		}
	}
	return nil
}

// forget marks everything the failed apply may have half-written as
// unknown. References taken while planning stay: the old slots may still
// name the old backends and the new slots the new ones.
func (r *Reconciler) forget() {
	for i := range r.b.planned {
		r.forgetOne(&r.b.planned[i])
	}
	for _, e := range r.b.backendEnts {
		e.known = false
	}
}

func (r *Reconciler) forgetOne(p *planned) {
	st := p.st
	st.known = false
	for len(st.slots) < p.end-p.start {
		st.slots = append(st.slots, 0)
	}
}

// commit records what steps 1-4 wrote and drops the references the old
// slots held; entries left without any are queued for deletion.
func (r *Reconciler) commit() {
	for i, e := range r.b.backendEnts {
		e.value, e.known = r.b.backendVals[i], true
	}
	for _, p := range r.b.planned {
		st := p.st
		r.noteGoneUDP(st, r.b.oldWants[p.wantStart:p.wantEnd])
		if p.remove {
			r.pendingRanges = append(r.pendingRanges, st.ranges...)
			st.ranges = nil
			for _, e := range st.held {
				r.release(e)
			}
			if st.revNat != 0 {
				r.queueRevNat(st.revNat)
			}
			delete(r.fes, st.key)
			continue
		}
		ids := r.b.ids[p.start:p.end]
		r.mark++
		for _, w := range st.wants {
			w.e.mark = r.mark
		}
		kept := st.held[:0]
		for _, e := range st.held {
			if e.mark == r.mark {
				kept = append(kept, e)
			} else {
				r.release(e)
			}
		}
		clear(st.held[len(kept):])
		st.held = kept
		st.slots = append(st.slots[:0], ids...)
		st.stray = nil
		r.commitRanges(st, p.ranges)
		st.svc, st.svcPresent, st.known, st.revKnown = p.val, true, true, true
	}
}

// commitRanges queues the keys st may have in the map that it no longer
// wants; slot 0 no longer needs them.
func (r *Reconciler) commitRanges(st *frontendState, want []lbmap.SourceRangeKey) {
	if len(st.ranges) == len(want) {
		return // st.ranges holds every wanted key, so it is exactly want
	}
	for _, k := range st.ranges {
		if !slices.Contains(want, k) {
			r.pendingRanges = append(r.pendingRanges, k)
		}
	}
	st.ranges = append(st.ranges[:0], want...)
}

func (r *Reconciler) updateRanges(keys []lbmap.SourceRangeKey) error {
	if r.maps.SourceRanges == nil {
		return errors.New("loadBalancerSourceRanges: no source-range map")
	}
	ones := make([]uint8, len(keys))
	for i := range ones {
		ones[i] = 1
	}
	return r.maps.SourceRanges.Update(keys, ones)
}

func (r *Reconciler) release(e *backendEntry) {
	e.refs--
	if e.refs == 0 && !e.pending {
		e.pending = true
		r.pendingBackends = append(r.pendingBackends, e)
	}
}

func (r *Reconciler) queueRevNat(id uint32) {
	if pending, used := r.revUsed[id]; used && !pending {
		r.revUsed[id] = true
		r.pendingRevNat = append(r.pendingRevNat, id)
	}
}

// collect runs steps 5 and 6: deletes unreferenced backends, then rev-NAT
// entries of removed frontends, and frees their IDs once gone.
func (r *Reconciler) collect() error {
	var dels []uint32
	var ents []*backendEntry
	for _, e := range r.pendingBackends {
		if e.refs > 0 { // wanted again before it was deleted
			e.pending = false
			continue
		}
		dels = append(dels, e.id)
		ents = append(ents, e)
	}
	r.pendingBackends = ents
	if len(dels) > 0 {
		if err := r.maps.Backends.Delete(dels); err != nil {
			for _, e := range ents {
				e.known = false
			}
			return fmt.Errorf("deleting %d unused backends: %w", len(dels), err)
		}
		for _, e := range ents {
			delete(r.byID, e.id)
			if e.keyed {
				delete(r.byKey, e.key)
			}
			r.backendIDs.put(e.id)
		}
		r.pendingBackends = r.pendingBackends[:0]
	}
	if len(r.pendingRanges) > 0 {
		if r.maps.SourceRanges == nil {
			r.pendingRanges = r.pendingRanges[:0]
		} else if err := r.maps.SourceRanges.Delete(r.pendingRanges); err != nil {
			return fmt.Errorf("deleting %d source ranges of changed frontends: %w", len(r.pendingRanges), err)
		}
		r.pendingRanges = r.pendingRanges[:0]
	}
	if len(r.pendingRevNat) > 0 {
		if err := r.maps.RevNat.Delete(r.pendingRevNat); err != nil {
			return fmt.Errorf("deleting %d rev-NAT entries of removed frontends: %w", len(r.pendingRevNat), err)
		}
		for _, id := range r.pendingRevNat {
			delete(r.revUsed, id)
			r.revNatIDs.put(id)
		}
		r.pendingRevNat = r.pendingRevNat[:0]
	}
	return nil
}
