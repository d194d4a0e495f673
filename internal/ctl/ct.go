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

// CTRow is one connection-tracking entry.
type CTRow struct {
	Direction string `json:"direction"` // forward | reply
	Protocol  string `json:"protocol"`
	Source    string `json:"source"`
	Dest      string `json:"destination"`
	Backend   string `json:"backend,omitempty"` // forward entries: where packets go
	// SNAT is set for masqueraded flows: on forward entries the masquerade
	// address:port the source becomes, on reply entries the client the
	// destination goes back to.
	SNAT      string   `json:"snat,omitempty"`
	BackendID uint32   `json:"backendID,omitempty"`
	RevNatID  uint32   `json:"revNatID"`
	Flags     []string `json:"flags,omitempty"`
	ExpiresIn int64    `json:"expiresInSeconds"` // negative: expired, awaiting GC
	Packets   uint64   `json:"packets"`
	Bytes     uint64   `json:"bytes"`
	// TSDelta is set on flows that took over a closed flow's tuple at the
	// backend: what their client's TCP timestamps are shifted by.
	TSDelta uint32 `json:"tsDelta,omitempty"`
}

// CT reads every connection-tracking entry, sorted by source then direction.
func CT(m bpfmap.Map[ctmap.Key, ctmap.Entry]) ([]CTRow, error) {
	all, err := m.All()
	if err != nil {
		return nil, err
	}
	now := ctmap.Now()
	rows := make([]CTRow, 0, len(all))
	for k, v := range all {
		rows = append(rows, ctRow(k, v, now))
	}
	slices.SortFunc(rows, func(a, b CTRow) int {
		return cmp.Or(cmp.Compare(a.Source, b.Source), cmp.Compare(a.Dest, b.Dest), cmp.Compare(a.Direction, b.Direction))
	})
	return rows, nil
}

func ctRow(k ctmap.Key, v ctmap.Entry, now uint64) CTRow {
	r := CTRow{
		Direction: "forward",
		Protocol:  lbmap.ProtoName(k.Proto),
		Source:    netip.AddrPortFrom(k.SAddr.IP(), k.SPort).String(),
		Dest:      netip.AddrPortFrom(k.DAddr.IP(), k.DPort).String(),
		RevNatID:  v.RevNatID,
		BackendID: v.BackendID,
		ExpiresIn: (int64(v.Expires) - int64(now)) / 1e9,
		Packets:   v.Packets,
		Bytes:     v.Bytes,
		TSDelta:   v.TsDelta,
	}
	if k.Dir == ctmap.Reply {
		r.Direction = "reply"
	} else {
		r.Backend = netip.AddrPortFrom(v.NatAddr.IP(), v.NatPort).String()
	}
	if v.Flags&ctmap.SeenReply != 0 {
		r.Flags = append(r.Flags, "seen-reply")
	}
	if v.Flags&ctmap.Closing != 0 {
		r.Flags = append(r.Flags, "closing")
	}
	if v.Flags&ctmap.TS != 0 {
		r.Flags = append(r.Flags, "ts")
	}
	if v.Flags&ctmap.SNAT != 0 {
		r.Flags = append(r.Flags, "snat")
		r.SNAT = netip.AddrPortFrom(v.SnatAddr.IP(), v.SnatPort).String()
	}
	return r
}

// FormatCT renders rows as the `ct list` table.
func FormatCT(rows []CTRow) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-7s %-5s %-22s %-22s %-22s %-22s %-7s %-8s %s\n", "DIR", "PROTO", "SOURCE", "DESTINATION", "BACKEND", "SNAT", "REVNAT", "EXPIRES", "PACKETS/BYTES")
	for _, r := range rows {
		fmt.Fprintf(&b, "%-7s %-5s %-22s %-22s %-22s %-22s %-7d %-8s %d/%d %s\n",
			r.Direction, r.Protocol, r.Source, r.Dest, r.Backend, r.SNAT, r.RevNatID,
			fmt.Sprintf("%ds", r.ExpiresIn), r.Packets, r.Bytes, strings.Join(r.Flags, ","))
	}
	return b.String()
}
