package policy

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/fastpath-net/fastpath/internal/identity"
)

// The ipcache maps every address the node may see to an identity by
// longest prefix: pod addresses (/32, /128) to their pod's identity, the
// prefixes of ipBlocks to node-local CIDR identities, and 0.0.0.0/0 and
// ::/0 to the world. It is kept incrementally; IPCacheDelta is what
// changed since the last Changes.

// IPCacheDelta is a set of writes to the ipcache map.
type IPCacheDelta struct {
	Upsert map[netip.Prefix]identity.ID
	Delete []netip.Prefix
}

// IPCache returns a copy of the whole desired ipcache.
func (e *Engine) IPCache() map[netip.Prefix]identity.ID {
	out := make(map[netip.Prefix]identity.ID, len(e.ipcache))
	for p, id := range e.ipcache {
		out[p] = id
	}
	return out
}

// DiffIPCache returns the writes that turn have into want (after a restart:
// have read from the pinned map, want from the Engine).
func DiffIPCache(have, want map[netip.Prefix]identity.ID) IPCacheDelta {
	d := IPCacheDelta{Upsert: map[netip.Prefix]identity.ID{}}
	for p, id := range want {
		if cur, ok := have[p]; !ok || cur != id {
			d.Upsert[p] = id
		}
	}
	for p := range have {
		if _, ok := want[p]; !ok {
			d.Delete = append(d.Delete, p)
		}
	}
	sortPrefixes(d.Delete)
	return d
}

func sortPrefixes(ps []netip.Prefix) {
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
}

func (e *Engine) setIPCache(p netip.Prefix, id identity.ID) {
	if cur, ok := e.ipcache[p]; ok && cur == id {
		return
	}
	e.ipcache[p] = id
	e.ipDirty[p] = true
}

func (e *Engine) delIPCache(p netip.Prefix) {
	if _, ok := e.ipcache[p]; ok {
		delete(e.ipcache, p)
		e.ipDirty[p] = true
	}
}

// refreshIP sets a host prefix from its owners: a pod wins over an
// ipBlock prefix of the same length (the pod's identity is the more
// specific fact; blocks allow pod identities by address, see
// blockIdentities). Two pods with one address (one terminating): the
// first by name, so every node picks the same.
func (e *Engine) refreshIP(a netip.Addr) {
	p := netip.PrefixFrom(a, a.BitLen())
	owners := e.ipOwners[a]
	// Pods waiting for their identity do not claim their address yet.
	known := slices.DeleteFunc(slices.Clone(owners), func(n PodName) bool { return e.pods[n].id == identity.Unknown })
	if len(owners) == 0 {
		delete(e.ipOwners, a)
	}
	if len(known) == 0 {
		if c, ok := e.cidrs[p]; ok {
			e.setIPCache(p, c.id)
		} else {
			e.delIPCache(p)
		}
		return
	}
	first := slices.MinFunc(known, comparePods)
	e.setIPCache(p, e.pods[first].id)
}

func (e *Engine) refreshPrefix(p netip.Prefix) {
	if p.IsSingleIP() {
		e.refreshIP(p.Addr())
		return
	}
	if c, ok := e.cidrs[p]; ok {
		e.setIPCache(p, c.id)
	} else {
		e.delIPCache(p)
	}
}

func (e *Engine) ipcacheDelta() IPCacheDelta {
	d := IPCacheDelta{Upsert: map[netip.Prefix]identity.ID{}}
	for p := range e.ipDirty {
		if id, ok := e.ipcache[p]; ok {
			d.Upsert[p] = id
		} else {
			d.Delete = append(d.Delete, p)
		}
	}
	clear(e.ipDirty)
	sortPrefixes(d.Delete)
	return d
}

func comparePods(x, y PodName) int { return strings.Compare(x.String(), y.String()) }
