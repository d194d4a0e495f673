package ctl

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfmap"
	"github.com/fastpath-net/fastpath/internal/datapath/ctmap"
	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
)

// AffinityRow is one client's session-affinity memory of one frontend.
type AffinityRow struct {
	Client      string `json:"client"`             // TC: the client's address; socket LB: "netns:<cookie>"
	Frontend    string `json:"frontend,omitempty"` // VIP:port/PROTO; empty when no frontend has RevNatID
	RevNatID    uint32 `json:"revNatID"`
	BackendID   uint32 `json:"backendID"`
	Backend     string `json:"backend,omitempty"` // address:port; empty when the backend is gone
	Slot        uint16 `json:"slot"`
	IdleSeconds int64  `json:"idleSeconds"` // since the client's last new connection
	// Followed says whether a new connection now would go to this backend:
	// the memory is fresh and its slot still holds the backend.
	Followed bool `json:"followed"`
}

// Affinity reads every session-affinity entry, with the frontend and backend
// it names, sorted by frontend then client.
func Affinity(lb lbmap.Maps, m bpfmap.Map[lbmap.AffinityKey, lbmap.AffinityValue]) ([]AffinityRow, error) {
	all, err := m.All()
	if err != nil {
		return nil, err
	}
	svcs, err := lb.Services.All()
	if err != nil {
		return nil, err
	}
	backends, err := lb.Backends.All()
	if err != nil {
		return nil, err
	}
	byRevNat := map[uint32]lbmap.ServiceKey{}
	for k, v := range svcs {
		if k.Slot == 0 {
			byRevNat[v.RevNatID] = k
		}
	}
	now := ctmap.Now()
	rows := make([]AffinityRow, 0, len(all))
	for k, v := range all {
		r := AffinityRow{
			Client: affinityClient(k), RevNatID: k.RevNatID, BackendID: v.BackendID, Slot: v.Slot,
			IdleSeconds: (int64(now) - int64(v.LastUsed)) / 1e9,
		}
		if be, ok := backends[v.BackendID]; ok {
			r.Backend = netip.AddrPortFrom(be.Addr.IP(), be.Port).String()
		}
		if sk, ok := byRevNat[k.RevNatID]; ok {
			r.Frontend = frontendString(sk)
			r.Followed = affinityFollowed(sk, svcs, v, now)
		}
		rows = append(rows, r)
	}
	slices.SortFunc(rows, func(a, b AffinityRow) int {
		return cmp.Or(cmp.Compare(a.Frontend, b.Frontend), cmp.Compare(a.Client, b.Client))
	})
	return rows, nil
}

func affinityClient(k lbmap.AffinityKey) string {
	if k.NetnsCookie != 0 {
		return fmt.Sprintf("netns:%d", k.NetnsCookie)
	}
	return k.Client.String()
}

// affinityFollowed repeats the datapath's test (bpf/include/affinity.h) for
// the frontend whose slot-0 key is sk.
func affinityFollowed(sk lbmap.ServiceKey, svcs map[lbmap.ServiceKey]lbmap.ServiceValue, v lbmap.AffinityValue, now uint64) bool {
	svc := svcs[sk]
	if svc.Flags&lbmap.ServiceAffinity == 0 || svc.AffinityTimeout == 0 {
		return false
	}
	// Unsigned, as in the datapath: a last use in the future counts as stale.
	if now-v.LastUsed > uint64(svc.AffinityTimeout)*1e9 {
		return false
	}
	if v.Slot == 0 || v.Slot > svc.Count {
		return false
	}
	sk.Slot = v.Slot
	slot, ok := svcs[sk]
	return ok && slot.BackendID == v.BackendID
}

// FormatAffinity renders rows as the `affinity list` table.
func FormatAffinity(rows []AffinityRow) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-28s %-24s %-28s %-6s %-8s %s\n", "FRONTEND", "CLIENT", "BACKEND", "SLOT", "IDLE", "FOLLOWED")
	for _, r := range rows {
		be := r.Backend
		if be == "" {
			be = fmt.Sprintf("%d (gone)", r.BackendID)
		}
		fe := r.Frontend
		if fe == "" {
			fe = fmt.Sprintf("revnat %d (gone)", r.RevNatID)
		}
		fmt.Fprintf(&b, "%-28s %-24s %-28s %-6d %-8s %v\n", fe, r.Client, be, r.Slot, fmt.Sprintf("%ds", r.IdleSeconds), r.Followed)
	}
	return b.String()
}
