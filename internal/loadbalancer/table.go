package loadbalancer

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"

	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
)

// ErrConflict marks a frontend that another service already owns.
var ErrConflict = errors.New("frontend conflict")

// ConflictError says a service asked for a frontend another service owns.
// errors.Is(err, ErrConflict) holds.
type ConflictError struct {
	Frontend Frontend
	Service  ServiceName // asked for the frontend and did not get it
	Owner    ServiceName // owns it and keeps it
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("service %s: frontend %s is already used by service %s, which keeps it",
		e.Service, e.Frontend, e.Owner)
}

func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// TableOption configures a Table.
type TableOption func(*Table)

// WithMaxBackendsPerFrontend makes Upsert refuse a service with more than n
// backends on one frontend. The default and the ceiling is MaxSlots (slot
// 0's count is 16 bits); an agent also keeps it below the services map's
// capacity.
func WithMaxBackendsPerFrontend(n int) TableOption {
	return func(t *Table) {
		if n > 0 && n < MaxSlots {
			t.maxBackends = n
		}
	}
}

// Table is the desired state of every service, keyed by frontend, with the
// set of frontends changed since the reconciler last took them. Safe for
// concurrent use by several sources and one reconciler.
//
// A frontend (address, port, protocol, scope) belongs to one service. When
// a second service asks for it, the first keeps it, the second's other
// frontends are still applied, and Upsert returns a ConflictError. The
// second service is remembered as waiting: when the owner lets go of the
// frontend, the longest-waiting service gets it, without another Upsert.
type Table struct {
	maxBackends int

	mu sync.Mutex
	// services holds each service's frontends sorted by key (normalize).
	services map[ServiceName][]FrontendSpec
	owner    map[lbmap.ServiceKey]ServiceName
	waiting  map[lbmap.ServiceKey][]ServiceName
	dirty    map[lbmap.ServiceKey]struct{}
}

// NewTable returns an empty table.
func NewTable(opts ...TableOption) *Table {
	t := &Table{
		maxBackends: MaxSlots,
		services:    make(map[ServiceName][]FrontendSpec),
		owner:       make(map[lbmap.ServiceKey]ServiceName),
		waiting:     make(map[lbmap.ServiceKey][]ServiceName),
		dirty:       make(map[lbmap.ServiceKey]struct{}),
	}
	for _, o := range opts {
		o(t)
	}
	return t
}

// Upsert sets what svc wants, replacing what it wanted before. A service
// that fails validation changes nothing and the error wraps ErrInvalid,
// listing every problem. Conflicting frontends are skipped, the rest is
// applied, and the error joins one ConflictError per skipped frontend.
// Upserting an unchanged service marks nothing dirty.
func (t *Table) Upsert(svc Service) error {
	fes, err := normalize(svc, t.maxBackends)
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.services[svc.Name]
	for _, fe := range old {
		if key := frontendKey(fe.Frontend); !hasKey(fes, key) {
			t.release(key, svc.Name)
		}
	}
	t.services[svc.Name] = fes
	var conflicts []error
	for _, fe := range fes {
		if err := t.claim(fe, svc.Name, old); err != nil {
			conflicts = append(conflicts, err)
		}
	}
	return errors.Join(conflicts...)
}

// Delete forgets the service; its frontends are removed at the next Sync
// or handed to a service waiting for them.
func (t *Table) Delete(name ServiceName) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, fe := range t.services[name] {
		t.release(frontendKey(fe.Frontend), name)
	}
	delete(t.services, name)
}

// FrontendOwner is the service that owns the frontend addr:port/proto in
// either scope; it names the service of a datapath event.
func (t *Table) FrontendOwner(addr netip.Addr, port uint16, proto uint8) (ServiceName, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, scope := range []uint8{lbmap.ScopeExternal, lbmap.ScopeInternal} {
		k := lbmap.ServiceKey{Addr: lbmap.Addr(addr.As16()), Port: port, Proto: proto, Scope: scope}
		if n, ok := t.owner[k]; ok {
			return n, true
		}
	}
	return ServiceName{}, false
}

// Len returns how many services the table holds.
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.services)
}

// Names returns the services the table holds, in no particular order.
func (t *Table) Names() []ServiceName {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Collect(maps.Keys(t.services))
}

// Dirty returns how many frontends changed since the last Sync took them.
func (t *Table) Dirty() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.dirty)
}

// claim gives fe's key to name, or queues name behind the current owner.
func (t *Table) claim(fe FrontendSpec, name ServiceName, old []FrontendSpec) error {
	key := frontendKey(fe.Frontend)
	owner, owned := t.owner[key]
	switch {
	case !owned:
		t.owner[key] = name
		t.dirty[key] = struct{}{}
		t.twinChanged(key)
	case owner == name:
		prev, had := specOf(old, key)
		if !had || !prev.Equal(fe) {
			t.dirty[key] = struct{}{}
		}
	default:
		if !slices.Contains(t.waiting[key], name) {
			t.waiting[key] = append(t.waiting[key], name)
		}
		return &ConflictError{Frontend: fe.Frontend, Service: name, Owner: owner}
	}
	return nil
}

// release takes name off key, as owner or as waiter. An owner's frontend
// passes to the first waiter, if any.
func (t *Table) release(key lbmap.ServiceKey, name ServiceName) {
	if t.owner[key] != name {
		t.waiting[key] = slices.DeleteFunc(t.waiting[key], func(n ServiceName) bool { return n == name })
		if len(t.waiting[key]) == 0 {
			delete(t.waiting, key)
		}
		return
	}
	t.dirty[key] = struct{}{}
	delete(t.owner, key)
	w := t.waiting[key]
	if len(w) == 0 {
		t.twinChanged(key)
		return
	}
	t.owner[key] = w[0]
	t.waiting[key] = w[1:]
	if len(w) == 1 {
		delete(t.waiting, key)
	}
}

// twinChanged marks the EXTERNAL twin of key dirty when key is INTERNAL
// and has just gained or lost its owner: the twin's slot 0 carries the
// flag that makes the datapath look INTERNAL up. An owner passing to a
// waiter changes nothing there.
func (t *Table) twinChanged(key lbmap.ServiceKey) {
	if key.Scope == lbmap.ScopeInternal {
		t.dirty[externalTwin(key)] = struct{}{}
	}
}

// externalTwin is the EXTERNAL key of key's address, port and protocol.
func externalTwin(key lbmap.ServiceKey) lbmap.ServiceKey {
	key.Scope = lbmap.ScopeExternal
	return key
}

// internalTwin is the INTERNAL key of key's address, port and protocol.
func internalTwin(key lbmap.ServiceKey) lbmap.ServiceKey {
	key.Scope = lbmap.ScopeInternal
	return key
}

// Equal says whether two specs program the same entries. Every field
// counts: a source that skips "unchanged" services must use this, or a
// change to a field it forgot never reaches the maps.
func (a FrontendSpec) Equal(b FrontendSpec) bool {
	return a.Frontend == b.Frontend && a.AffinityTimeout == b.AffinityTimeout && a.ExtLocal == b.ExtLocal &&
		slices.Equal(a.Backends, b.Backends) && slices.Equal(a.SourceRanges, b.SourceRanges)
}

// change is one frontend as the reconciler must make it: present with its
// spec, or absent. spec points into the table's slice of the owner's
// frontends, which is never written after Upsert made it (an Upsert makes
// a new one): a copy per change made a full resync of 50,000 services
// hold 8 MB of them.
type change struct {
	key     lbmap.ServiceKey
	owner   ServiceName
	spec    *FrontendSpec // nil when absent
	present bool
	// twin is set on an EXTERNAL key whose INTERNAL twin the table
	// holds: its slot 0 gets ServiceInternalTwin.
	twin bool
}

// takeDirty appends the changed frontends to buf, in key order, and clears
// the dirty set.
func (t *Table) takeDirty(buf []change) []change {
	t.mu.Lock()
	defer t.mu.Unlock()
	for key := range t.dirty {
		buf = append(buf, t.changeOf(key))
	}
	t.resetDirty()
	slices.SortFunc(buf, func(a, b change) int { return compareKeys(a.key, b.key) })
	return buf
}

// takeAll returns every frontend the table wants, in key order, and clears
// the dirty set: a full resync covers the changes too.
func (t *Table) takeAll() []change {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]change, 0, len(t.owner))
	for key := range t.owner {
		out = append(out, t.changeOf(key))
	}
	t.resetDirty()
	slices.SortFunc(out, func(a, b change) int { return compareKeys(a.key, b.key) })
	return out
}

// resetDirty empties the dirty set. A cleared Go map keeps its size, and
// ranging over it costs that size: after a big batch (the first sync of
// 50,000 services) a fresh map keeps later syncs O(changed).
func (t *Table) resetDirty() {
	if len(t.dirty) > 64 {
		t.dirty = make(map[lbmap.ServiceKey]struct{})
		return
	}
	clear(t.dirty)
}

func (t *Table) changeOf(key lbmap.ServiceKey) change {
	owner, ok := t.owner[key]
	if !ok {
		return change{key: key}
	}
	specs := t.services[owner]
	i, _ := specIndex(specs, key) // an owner holds the specs of what it owns
	c := change{key: key, owner: owner, spec: &specs[i], present: true}
	if key.Scope == lbmap.ScopeExternal {
		_, c.twin = t.owner[internalTwin(key)]
	}
	return c
}

// markDirty puts frontends back after a failed write, so the next Sync
// retries them.
func (t *Table) markDirty(keys ...lbmap.ServiceKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, k := range keys {
		t.dirty[k] = struct{}{}
	}
}

// compareKeys orders service keys by address, port, protocol, scope, slot.
func compareKeys(a, b lbmap.ServiceKey) int {
	if c := bytes.Compare(a.Addr[:], b.Addr[:]); c != 0 {
		return c
	}
	return cmp.Or(cmp.Compare(a.Port, b.Port), cmp.Compare(a.Proto, b.Proto),
		cmp.Compare(a.Scope, b.Scope), cmp.Compare(a.Slot, b.Slot))
}
