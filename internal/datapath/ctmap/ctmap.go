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
	SeenReply uint16 = 1 << 0
	Closing   uint16 = 1 << 1
	SNAT      uint16 = 1 << 2 // masqueraded flow: SnatAddr/SnatPort are set
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
	// SnatAddr, with SnatPort, is set on masqueraded flows (Flags&SNAT):
	// FORWARD: the masquerade address the source becomes; REPLY: the
	// client the destination goes back to.
	SnatAddr lbmap.Addr
	Expires  uint64 // CLOCK_BOOTTIME nanoseconds
	Packets  uint64
	Bytes    uint64
}
