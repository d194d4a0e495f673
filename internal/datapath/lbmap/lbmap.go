// Package lbmap holds the Go twins of the load-balancer map layouts in
// bpf/include/fastpath.h. Field order and sizes must match the C structs
// exactly; layout_test.go checks them against the compiled objects' BTF.
package lbmap

import (
	"bytes"
	"cmp"
	"fmt"
	"net/netip"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfmap"
)

// Addr is a 16-byte address; IPv4 is stored IPv4-mapped (::ffff:a.b.c.d).
type Addr [16]byte

// AddrFrom converts a netip.Addr to the map form.
func AddrFrom(a netip.Addr) Addr { return Addr(a.As16()) }

// IP returns the address, unmapped when it is an IPv4-mapped address.
func (a Addr) IP() netip.Addr { return netip.AddrFrom16(a).Unmap() }

func (a Addr) String() string { return a.IP().String() }

// Protocol numbers as the kernel uses them.
const (
	ProtoTCP  uint8 = 6
	ProtoUDP  uint8 = 17
	ProtoSCTP uint8 = 132
)

// ProtoName returns "TCP", "UDP", "SCTP" or the number.
func ProtoName(p uint8) string {
	switch p {
	case ProtoTCP:
		return "TCP"
	case ProtoUDP:
		return "UDP"
	case ProtoSCTP:
		return "SCTP"
	}
	return fmt.Sprintf("proto-%d", p)
}

// Scopes of a service entry (FP_SCOPE_*).
const (
	ScopeExternal uint8 = 0
	ScopeInternal uint8 = 1
)

// ServiceKey mirrors struct fp_svc_key.
type ServiceKey struct {
	Addr  Addr
	Port  uint16
	Proto uint8
	Scope uint8
	Slot  uint16
	_     uint16
}

func (k ServiceKey) String() string {
	return fmt.Sprintf("%s/%s slot %d", netip.AddrPortFrom(k.Addr.IP(), k.Port), ProtoName(k.Proto), k.Slot)
}

// Service flags (FP_SVC_F_*).
const (
	ServiceAffinity     uint16 = 1 << 0
	ServiceNodePort     uint16 = 1 << 1
	ServiceExternalIP   uint16 = 1 << 2
	ServiceLoadBalancer uint16 = 1 << 3
	// ServiceExtLocal is externalTrafficPolicy: Local: traffic arriving on
	// an external interface keeps its source address (no masquerade). The
	// control plane gives such a frontend's EXTERNAL entry only node-local
	// backends, and an INTERNAL entry with all of them.
	ServiceExtLocal uint16 = 1 << 4
	// ServiceSourceRanges is loadBalancerSourceRanges: new flows only from
	// sources SourceRanges holds for the entry's rev-NAT ID.
	ServiceSourceRanges uint16 = 1 << 5
	// ServiceInternalTwin, on an EXTERNAL entry, says the INTERNAL entry
	// of the same address, port and protocol exists: the datapath looks
	// INTERNAL up only then, so traffic to no service costs one lookup.
	ServiceInternalTwin uint16 = 1 << 6
)

// ServiceValue mirrors struct fp_svc_val.
type ServiceValue struct {
	BackendID       uint32
	Count           uint16
	Flags           uint16
	RevNatID        uint32
	AffinityTimeout uint32
}

// Backend states (FP_BACKEND_*).
const (
	BackendActive      uint8 = 0
	BackendTerminating uint8 = 1
	BackendQuarantined uint8 = 2
)

// Backend mirrors struct fp_backend.
type Backend struct {
	Addr  Addr
	Port  uint16
	Proto uint8
	State uint8
	_     uint32
}

// RevNat mirrors struct fp_rev_nat.
type RevNat struct {
	Addr Addr
	Port uint16
	_    uint16
}

// AffinityKey mirrors struct fp_affinity_key: one client of one frontend.
// The TC datapath sets Client (the source address) and leaves NetnsCookie
// zero; the socket LB does the opposite.
type AffinityKey struct {
	Client      Addr
	NetnsCookie uint64
	RevNatID    uint32
	_           uint32
}

func (k AffinityKey) String() string {
	if k.NetnsCookie != 0 {
		return fmt.Sprintf("netns %d revnat %d", k.NetnsCookie, k.RevNatID)
	}
	return fmt.Sprintf("%s revnat %d", k.Client, k.RevNatID)
}

// AffinityValue mirrors struct fp_affinity_val: the backend the client's
// last new connection got, from which slot, and when.
type AffinityValue struct {
	BackendID uint32
	Slot      uint16
	_         uint16
	LastUsed  uint64 // CLOCK_BOOTTIME nanoseconds
}

// Config mirrors struct fp_config, the node-wide settings (one entry, key 0).
type Config struct {
	MasqAddr    Addr   // source of masqueraded flows; not IPv4-mapped: none
	SnatPortMin uint16 // masquerade ports, inclusive
	SnatPortMax uint16
	Flags       uint32 // ConfigEgressMasq
}

// ConfigEgressMasq is FP_CONFIG_F_EGRESS_MASQ: pod traffic leaving the
// cluster CIDRs (the fp_no_masq map) is masqueraded.
const ConfigEgressMasq = 1 << 0

// fp_no_masq's values (FP_NO_MASQ_* in bpf/include/egress.h).
const (
	NoMasqCluster = 1 // a cluster CIDR: pods, whose traffic out is masqueraded
	NoMasqNode    = 2 // a node's address: not masqueraded to
)

// CIDRKey is struct fp_cidr_key, the key of the LPM maps (fp_no_masq,
// fp_tunnel_map): an IPv4 prefix /n is stored IPv4-mapped with 96 + n bits.
type CIDRKey struct {
	Prefixlen uint32
	Addr      Addr
}

// CIDRKeyFrom returns p's key.
func CIDRKeyFrom(p netip.Prefix) CIDRKey {
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	return CIDRKey{Prefixlen: uint32(bits), Addr: AddrFrom(p.Masked().Addr())}
}

// SourceRangeKey mirrors struct fp_source_range_key, a key of the LPM trie
// fp_source_ranges: one loadBalancerSourceRanges prefix of one frontend.
// PrefixLen counts RevNatID's 32 bits too.
type SourceRangeKey struct {
	PrefixLen uint32
	RevNatID  uint32
	Addr      Addr
}

// SourceRangeKeyOf is the key of prefix p (IPv4) for frontend revNat.
func SourceRangeKeyOf(revNat uint32, p netip.Prefix) SourceRangeKey {
	p = p.Masked()
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96 // the IPv4-mapped form's ::ffff: prefix
	}
	return SourceRangeKey{PrefixLen: uint32(32 + bits), RevNatID: revNat, Addr: AddrFrom(p.Addr())}
}

// CompareSourceRangeKeys orders keys by rev-NAT ID, address, length.
func CompareSourceRangeKeys(a, b SourceRangeKey) int {
	return cmp.Or(cmp.Compare(a.RevNatID, b.RevNatID), bytes.Compare(a.Addr[:], b.Addr[:]), cmp.Compare(a.PrefixLen, b.PrefixLen))
}

func (k SourceRangeKey) String() string {
	bits := int(k.PrefixLen) - 32
	if k.Addr.IP().Is4() {
		bits -= 96
	}
	return fmt.Sprintf("revnat %d %s/%d", k.RevNatID, k.Addr, bits)
}

// Maps is the set of load-balancer maps a reconciler writes.
type Maps struct {
	Services bpfmap.Map[ServiceKey, ServiceValue]
	Backends bpfmap.Map[uint32, Backend]
	RevNat   bpfmap.Map[uint32, RevNat]
	// SourceRanges is an LPM trie; the value is unused (always 1).
	SourceRanges bpfmap.Map[SourceRangeKey, uint8]
}

// NewFakeMaps returns in-memory maps of the given capacity, for tests.
func NewFakeMaps(capacity int) (Maps, *bpfmap.Fake[ServiceKey, ServiceValue], *bpfmap.Fake[uint32, Backend], *bpfmap.Fake[uint32, RevNat]) {
	s := bpfmap.NewFake[ServiceKey, ServiceValue]("fp_services", capacity)
	b := bpfmap.NewFake[uint32, Backend]("fp_backends", capacity)
	r := bpfmap.NewFake[uint32, RevNat]("fp_rev_nat", capacity)
	sr := bpfmap.NewFake[SourceRangeKey, uint8]("fp_source_ranges", capacity)
	return Maps{Services: s, Backends: b, RevNat: r, SourceRanges: sr}, s, b, r
}
