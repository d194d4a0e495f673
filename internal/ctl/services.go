package ctl

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
)

// ServiceRow is one frontend and the backends its slots name.
type ServiceRow struct {
	Frontend        string       `json:"frontend"` // VIP:port/PROTO
	Scope           string       `json:"scope"`
	Flags           []string     `json:"flags,omitempty"`
	RevNatID        uint32       `json:"revNatID"`
	AffinityTimeout uint32       `json:"affinityTimeoutSeconds,omitempty"`
	Backends        []BackendRow `json:"backends"`
	Problems        []string     `json:"problems,omitempty"`
}

// BackendRow is one backend slot of a frontend.
type BackendRow struct {
	Slot    uint16 `json:"slot"`
	ID      uint32 `json:"id"`
	Address string `json:"address"`
	State   string `json:"state"`
}

// Services reads the service, backend and rev-NAT maps into rows sorted by
// frontend. Inconsistencies (a slot naming a missing backend, a missing slot)
// are reported in Problems rather than hidden.
func Services(lb lbmap.Maps) ([]ServiceRow, error) {
	svcs, err := lb.Services.All()
	if err != nil {
		return nil, err
	}
	backends, err := lb.Backends.All()
	if err != nil {
		return nil, err
	}
	var rows []ServiceRow
	for k, v := range svcs {
		if k.Slot != 0 {
			continue
		}
		rows = append(rows, serviceRow(k, v, svcs, backends))
	}
	slices.SortFunc(rows, func(a, b ServiceRow) int { return cmp.Compare(a.Frontend, b.Frontend) })
	return rows, nil
}

func serviceRow(k lbmap.ServiceKey, v lbmap.ServiceValue, svcs map[lbmap.ServiceKey]lbmap.ServiceValue, backends map[uint32]lbmap.Backend) ServiceRow {
	row := ServiceRow{
		Frontend:        frontendString(k),
		Scope:           scopeName(k.Scope),
		Flags:           flagNames(v.Flags),
		RevNatID:        v.RevNatID,
		AffinityTimeout: v.AffinityTimeout,
		Backends:        []BackendRow{},
	}
	for slot := uint16(1); slot <= v.Count; slot++ {
		sk := k
		sk.Slot = slot
		sv, ok := svcs[sk]
		if !ok {
			row.Problems = append(row.Problems, fmt.Sprintf("slot %d missing", slot))
			continue
		}
		be, ok := backends[sv.BackendID]
		if !ok {
			row.Problems = append(row.Problems, fmt.Sprintf("slot %d names backend %d, which is not in fp_backends", slot, sv.BackendID))
			continue
		}
		row.Backends = append(row.Backends, BackendRow{
			Slot:    slot,
			ID:      sv.BackendID,
			Address: netip.AddrPortFrom(be.Addr.IP(), be.Port).String(),
			State:   BackendStateName(be.State),
		})
	}
	return row
}

func frontendString(k lbmap.ServiceKey) string {
	return netip.AddrPortFrom(k.Addr.IP(), k.Port).String() + "/" + lbmap.ProtoName(k.Proto)
}

func scopeName(s uint8) string {
	if s == lbmap.ScopeInternal {
		return "internal"
	}
	return "external"
}

// BackendStateName names a backend state as fastpathctl prints it.
func BackendStateName(s uint8) string { return lbmap.StateName(s) }

func flagNames(f uint16) []string { return lbmap.FlagNames(f) }

// FormatServices renders rows as the `service list` table.
func FormatServices(rows []ServiceRow) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-28s %-8s %-36s %s\n", "FRONTEND", "REVNAT", "BACKEND", "STATE")
	for _, r := range rows {
		first := r.Frontend
		if r.Scope == "internal" {
			first += " (internal)"
		}
		if len(r.Flags) > 0 {
			first += " [" + strings.Join(r.Flags, ",") + "]"
		}
		rev := fmt.Sprint(r.RevNatID)
		if len(r.Backends) == 0 {
			fmt.Fprintf(&b, "%-28s %-8s %-36s %s\n", first, rev, "(none: rejected)", "")
		}
		for _, be := range r.Backends {
			fmt.Fprintf(&b, "%-28s %-8s %-36s %s\n", first, rev, fmt.Sprintf("%d => %s", be.ID, be.Address), be.State)
			first, rev = "", ""
		}
		for _, p := range r.Problems {
			fmt.Fprintf(&b, "%-28s %-8s PROBLEM: %s\n", "", "", p)
		}
	}
	return b.String()
}
