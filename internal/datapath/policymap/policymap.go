// Package policymap holds the Go twins of the policy maps of
// bpf/include/policy.h and turns internal/policy's desired state into
// their keys. The twins' layouts are checked against the object's BTF.
package policymap

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"unsafe"

	"github.com/fastpath-net/fastpath/internal/identity"
	"github.com/fastpath-net/fastpath/internal/policy"
)

// Map names, as pinned.
const (
	IPCacheMap   = "fp_ipcache"
	EndpointsMap = "fp_endpoints"
	PolicyMap    = "fp_policy"
	PolicyCTMap  = "fp_policy_ct"
	VerdictsMap  = "fp_verdicts"
	ConfigMap    = "fp_policy_config"
	MetricsMap   = "fp_policy_metrics"
)

// Indexes of fp_policy_metrics (enum fp_policy_metric), per-CPU u64.
const (
	MetricRingLost = 0 // verdict records lost to a full ring
	MetricDropped  = 1 // packets dropped by policy
	// MetricRateLimited counts drop records not written: over the
	// per-CPU budget PolicyConfig.DropsPerSec.
	MetricRateLimited = 2
)

// PolicyConfig is struct fp_policy_cfg, the one value of fp_policy_config.
type PolicyConfig struct {
	AllowSample uint32 // write 1 in AllowSample allow records; 0: none
	DropsPerSec uint32 // per CPU; 0: no limit
}

// CTClosing is FP_PCT_F_CLOSING: a FIN or RST was seen; the entry keeps
// the short closing lifetime.
const CTClosing = 1 << 0

// Directions (FP_DIR_*) equal policy.Ingress and policy.Egress.
const (
	DirIngress = uint8(policy.Ingress)
	DirEgress  = uint8(policy.Egress)
)

// Endpoint flags (FP_EP_F_*).
const (
	EnforceIngress uint16 = 1 << 0
	EnforceEgress  uint16 = 1 << 1
)

// Prefix lengths of PolicyKey (FP_POLICY_PREFIX_*): identity, endpoint
// and dir are 56 bits, proto 8 more, port 16 more.
const (
	prefixAnyProto = 56
	prefixAnyPort  = 64
)

// Verdicts and reasons of a Verdict record.
const (
	VerdictDrop  = 0
	VerdictAllow = 1

	ReasonPolicyAllowed = 0
	ReasonPolicyDenied  = 1
	ReasonCTFull        = 2 // fp_policy_ct insert failed
	ReasonRelated       = 3
	// tc_lb's drops (bpf/include/drop.h); Cookie is the rev-nat id.
	ReasonLBNoBackend   = 4
	ReasonLBSourceRange = 5
	ReasonLBCTFull      = 6
	ReasonLBMalformed   = 7
	ReasonLBBackendGone = 8
	ReasonLBSNATNoPort  = 9
	ReasonLBNoRoute     = 10
	// An allow (sampled) of a new flow into a pod no ingress policy
	// selects (tc_policy).
	ReasonForwarded = 11
	// L7 policy (FP_REASON_PROXY_REDIRECT, FP_REASON_NO_PROXY).
	ReasonProxyRedirect = 16
	ReasonNoProxy       = 17
	// tc_lb: a pod sent from an address not its own (FP_REASON_SPOOFED).
	ReasonSpoofed = 18
)

// IPCacheKey is struct fp_ipcache_key.
type IPCacheKey struct {
	Prefixlen uint32
	Addr      [16]byte
}

// IPCacheValue is struct fp_ipcache_val.
type IPCacheValue struct {
	Identity uint32
	Flags    uint32
}

// Endpoint is struct fp_endpoint (value of fp_endpoints, keyed by ifindex).
type Endpoint struct {
	ID       uint16
	Flags    uint16
	Identity uint32
	// Addr4 is the pod's IPv4 address (network order); tc_lb drops what the
	// pod sends from another source. Zero: not known, not checked.
	Addr4 [4]byte
}

// PolicyKey is struct fp_policy_key.
type PolicyKey struct {
	Prefixlen uint32
	Identity  uint32
	Endpoint  uint16
	Dir       uint8
	Proto     uint8
	Port      [2]byte // big-endian, so port blocks are prefixes
	_         uint16
}

// PolicyValue is struct fp_policy_val.
type PolicyValue struct {
	Cookie    uint32
	ProxyPort uint16 // FlagL7: the node's L7 proxy listener; 0: none (dropped)
	Flags     uint16
}

// PolicyValue.Flags: FP_POLICY_F_*.
const FlagL7 uint16 = 1 << 0

// Marks of FP_PROXY_MARK_* (bpf/include/policy.h): the proxy's upstream
// sockets carry MarkUpstream (SO_MARK); redirected packets get
// MarkRedirect, which the node's policy route sends to the local table.
const (
	MarkUpstream uint32 = 0x0fa70000
	MarkRedirect uint32 = 0x0fa80000
	MarkMask     uint32 = 0xffff0000
)

// CTKey is struct fp_pct_key.
type CTKey struct {
	Saddr    [16]byte
	Daddr    [16]byte
	Sport    uint16
	Dport    uint16
	Proto    uint8
	Dir      uint8
	Endpoint uint16
}

// CTValue is struct fp_pct_val.
type CTValue struct {
	Expires uint64
	Cookie  uint32
	Flags   uint32
}

// Verdict is struct fp_verdict, one record of the fp_verdicts ring.
type Verdict struct {
	TsNs        uint64
	Saddr       [16]byte
	Daddr       [16]byte
	SrcIdentity uint32
	DstIdentity uint32
	Sport       uint16
	Dport       uint16
	Endpoint    uint16
	Proto       uint8
	Dir         uint8
	Verdict     uint8
	Reason      uint8
	_           uint16
	Cookie      uint32
}

// Addr returns the 16-byte map form of an address (IPv4-mapped for IPv4).
func Addr(a netip.Addr) [16]byte { return a.As16() }

// IPCacheKeyOf is the LPM key of a prefix.
func IPCacheKeyOf(p netip.Prefix) IPCacheKey {
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	return IPCacheKeyOf16(p.Masked().Addr().As16(), uint32(bits))
}

// IPCacheKeyOf16 builds a key from the map form.
func IPCacheKeyOf16(a [16]byte, bits uint32) IPCacheKey { return IPCacheKey{Prefixlen: bits, Addr: a} }

// PolicyKeys are the fp_policy keys of one entry of an endpoint: one for
// every protocol or every port, else one per aligned port block.
func PolicyKeys(ep uint16, k policy.Key) []PolicyKey {
	base := PolicyKey{Identity: uint32(k.Identity), Endpoint: ep, Dir: uint8(k.Dir), Proto: uint8(k.Proto)}
	if k.Proto == policy.AnyProto {
		base.Proto = 0
		base.Prefixlen = prefixAnyProto
		return []PolicyKey{base}
	}
	var out []PolicyKey
	for _, pp := range policy.PortPrefixes(k.Port, k.EndPort) {
		pk := base
		pk.Prefixlen = prefixAnyPort + uint32(pp.Bits)
		binary.BigEndian.PutUint16(pk.Port[:], pp.Port)
		out = append(out, pk)
	}
	return out
}

// EndpointValue is the fp_endpoints value of an endpoint's policy.
// addr4 is the pod's IPv4 address, the only source it may send from; the
// zero Addr (or an IPv6 one) leaves the source unchecked.
func EndpointValue(id uint16, addr4 netip.Addr, ep *policy.EndpointPolicy) Endpoint {
	v := Endpoint{ID: id, Identity: uint32(ep.Identity)}
	if addr4.Is4() {
		v.Addr4 = addr4.As4()
	}
	if ep.Enforced[policy.Ingress] {
		v.Flags |= EnforceIngress
	}
	if ep.Enforced[policy.Egress] {
		v.Flags |= EnforceEgress
	}
	return v
}

// Peer returns a verdict's peer identity for its direction.
func (v Verdict) Peer() identity.ID {
	if v.Dir == DirEgress {
		return identity.ID(v.DstIdentity)
	}
	return identity.ID(v.SrcIdentity)
}

// DecodeVerdict reads one ring record.
func DecodeVerdict(raw []byte) (Verdict, error) {
	var v Verdict
	if len(raw) < int(unsafe.Sizeof(v)) {
		return v, fmt.Errorf("verdict record of %d bytes, want %d", len(raw), unsafe.Sizeof(v))
	}
	_, err := binary.Decode(raw, binary.NativeEndian, &v)
	return v, err
}
