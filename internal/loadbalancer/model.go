package loadbalancer

import (
	"net/netip"

	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
)

// badSlot stands in the model for a slot entry that exists in the map but
// does not simply name a backend: it never equals a wanted ID, so the slot
// is rewritten or deleted.
const badSlot uint32 = maxID + 1

// backendKey is what makes two backends the same map entry.
type backendKey struct {
	addr  lbmap.Addr
	port  uint16
	proto uint8
}

func keyOfBackend(b Backend) backendKey {
	return backendKey{addr: lbmap.AddrFrom(b.Addr), port: b.Port, proto: uint8(b.Proto)}
}

func keyOfValue(v lbmap.Backend) backendKey {
	return backendKey{addr: v.Addr, port: v.Port, proto: v.Proto}
}

// backendEntry is one backend ID: who holds it and what the map holds for it.
type backendEntry struct {
	id  uint32
	key backendKey
	// keyed is true when byKey leads to this entry. IDs found in the maps
	// that duplicate another ID's backend, or that slots name but the
	// backends map lacks, are unkeyed: kept only until nothing holds them.
	keyed bool
	// refs counts frontends whose slots may name this ID in the map. The
	// entry is deleted only at zero, and its ID reused only after that.
	refs int32
	// wanted counts, per state, frontends whose desired backends list it.
	wanted [Quarantined + 1]int32
	// value is what the map holds for id, when known.
	value   lbmap.Backend
	known   bool
	pending bool // queued for deletion

	mark    uint64 // set membership during one frontend's plan or commit
	touched uint64 // listed once per apply
}

// desired is the entry the map should hold: the most cautious state any
// frontend gives it (quarantined over terminating over active), so the
// answer does not depend on which frontend was synced last.
func (e *backendEntry) desired() (lbmap.Backend, bool) {
	for s := len(e.wanted) - 1; s >= 0; s-- {
		if e.wanted[s] > 0 {
			return lbmap.Backend{Addr: e.key.addr, Port: e.key.port, Proto: e.key.proto, State: uint8(s)}, true
		}
	}
	return lbmap.Backend{}, false
}

type want struct {
	e     *backendEntry
	state BackendState
}

// frontendState is one frontend as the reconciler believes the maps hold it.
type frontendState struct {
	key   lbmap.ServiceKey
	owner ServiceName // zero for frontends found in the maps and not yet claimed

	revNat   uint32
	revKnown bool // rev_nat holds this frontend's entry under revNat

	// known is false after a failed write: then svc and the slot values are
	// not trusted, and slots/stray only bound which slots may exist.
	known      bool
	svc        lbmap.ServiceValue
	svcPresent bool
	slots      []uint32          // slots[i] is slot i+1's backend ID; 0 absent
	stray      map[uint16]uint32 // slots above len(slots) that exist; nil normally

	// ranges are the fp_source_ranges keys the map holds, or may hold
	// after a failed write, for this frontend (its rev-NAT ID).
	ranges []lbmap.SourceRangeKey

	held  []*backendEntry // IDs this frontend holds a reference on
	wants []want          // desired backends as last planned, for state counts
}

// slotAt returns what the model says slot n (from 1) holds, 0 if absent.
func (st *frontendState) slotAt(n int) uint32 {
	if n <= len(st.slots) {
		return st.slots[n-1]
	}
	return st.stray[uint16(n)]
}

// setSlot records slot n as the maps hold it. Slots continue the dense list
// when they follow it or lie within the service entry's count; others are
// stray, so a corrupt map cannot make the model allocate 65,535 slots.
func (st *frontendState) setSlot(n int, id uint32) {
	if n <= len(st.slots) {
		st.slots[n-1] = id
		return
	}
	if n == len(st.slots)+1 || (st.svcPresent && n <= int(st.svc.Count)) {
		for len(st.slots) < n-1 {
			st.slots = append(st.slots, 0)
		}
		st.slots = append(st.slots, id)
		return
	}
	if st.stray == nil {
		st.stray = make(map[uint16]uint32)
	}
	st.stray[uint16(n)] = id
}

func revNatOf(key lbmap.ServiceKey) lbmap.RevNat {
	return lbmap.RevNat{Addr: key.Addr, Port: key.Port}
}

// frontendName renders a slot-0 key for errors.
func frontendName(k lbmap.ServiceKey) string {
	s := netip.AddrPortFrom(k.Addr.IP(), k.Port).String() + "/" + lbmap.ProtoName(k.Proto)
	if k.Scope == lbmap.ScopeInternal {
		s += " internal"
	}
	return s
}

func ownerName(n ServiceName) string {
	if n == (ServiceName{}) {
		return "(found in the maps)"
	}
	return n.String()
}
