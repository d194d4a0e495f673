// Package ctmap holds the Go twin of the connection-tracking map layout in
// bpf/include/fastpath.h, and reads it for fastpathctl and garbage collection.
package ctmap

import (
	"fmt"
	"net/netip"

	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
)

// Directions (FP_CT_*).
const (
	Forward uint8 = 0
	Reply   uint8 = 1
)

// Entry flags (FP_CT_F_*).
const (
	SeenReply uint16 = 1 << 0 // reply entries only: a reply went through
	Closing   uint16 = 1 << 1
	SNAT      uint16 = 1 << 2 // source translated: SnatAddr/SnatPort are set
	// SNATPort, with SNAT: only the source port is translated, the address
	// is the client's own. The flow's tuple at the backend clashed with
	// another flow's. SNAT alone is a masqueraded flow.
	SNATPort uint16 = 1 << 3
	// NodePort marks a flow to a NodePort frontend: its replies leave
	// through a FIB lookup and a redirect, their source being the node's.
	NodePort uint16 = 1 << 4
	// TS marks a closing flow's REPLY entry whose TsLast holds the last
	// timestamp the backend got from the client: a new flow may take the
	// tuple over (bpf/include/ct.h).
	TS uint16 = 1 << 5
)

// Key mirrors struct fp_ct_key.
type Key struct {
	SAddr lbmap.Addr
	DAddr lbmap.Addr
	SPort uint16
	DPort uint16
	Proto uint8
	Dir   uint8
	_     uint16
}

func (k Key) String() string {
	dir := "fwd"
	if k.Dir == Reply {
		dir = "rep"
	}
	return fmt.Sprintf("%s %s %s -> %s", dir, lbmap.ProtoName(k.Proto),
		netip.AddrPortFrom(k.SAddr.IP(), k.SPort), netip.AddrPortFrom(k.DAddr.IP(), k.DPort))
}

// Entry mirrors struct fp_ct_entry.
type Entry struct {
	NatAddr   lbmap.Addr // FORWARD: backend; REPLY: frontend
	NatPort   uint16
	Flags     uint16
	RevNatID  uint32
	BackendID uint32
	SnatPort  uint16
	_         uint16
	// SnatAddr, with SnatPort, is set on flows with Flags&SNAT: FORWARD:
	// the address the source becomes (the masquerade address, or with
	// SNATPort the client's own); REPLY: the client the destination goes
	// back to.
	SnatAddr lbmap.Addr
	Expires  uint64 // CLOCK_BOOTTIME nanoseconds
	Packets  uint64
	Bytes    uint64
	// TsDelta is added to the client's TSval and taken from the backend's
	// TSecr: the flow took over a closed flow's tuple (0: no translation).
	TsDelta uint32
	// TsLast, with Flags&TS: the last TSval the backend got from the
	// client once the flow was closing.
	TsLast uint32
}
