package loadbalancer

import (
	"errors"
	"math"
)

// errNoIDs is returned when every ID is taken.
var errNoIDs = errors.New("no free ID left")

// maxID is the largest ID handed out. math.MaxUint32 is kept back so the
// reconciler can use it to mark a slot whose content is not a backend ID.
const maxID = math.MaxUint32 - 1

// idAlloc hands out uint32 IDs from 1. Released IDs are reused oldest
// first, which delays reuse as long as possible: connection-tracking entries
// name rev-NAT and backend IDs, and a late packet of a finished flow should
// not meet its old ID on a new object.
type idAlloc struct {
	next uint32   // smallest ID never handed out, 0 once all were
	free []uint32 // released IDs, oldest first
}

func newIDAlloc() idAlloc { return idAlloc{next: 1} }

// get returns an ID for which inUse is false. IDs adopted from the maps
// after a restart are in use without having been handed out, hence the check.
func (a *idAlloc) get(inUse func(uint32) bool) (uint32, error) {
	for len(a.free) > 0 {
		id := a.free[0]
		a.free = a.free[1:]
		if !inUse(id) {
			return id, nil
		}
	}
	for a.next != 0 {
		id := a.next
		a.next++
		if id == maxID {
			a.next = 0
		}
		if !inUse(id) {
			return id, nil
		}
	}
	return 0, errNoIDs
}

// put makes id available again; the caller no longer references it.
// IDs get never returns, found in a corrupt map, are not kept.
func (a *idAlloc) put(id uint32) {
	if id != 0 && id <= maxID {
		a.free = append(a.free, id)
	}
}
