// Package lbipam hands out LoadBalancer addresses: FastpathLoadBalancerIPPool
// objects (deploy/crds) hold the addresses, and the Controller writes one of
// them into status.loadBalancer.ingress of each type=LoadBalancer Service
// with no loadBalancerClass or ours. The Allocator is the pure part, with no
// API access; all state lives in Service statuses and is rebuilt from them.
package lbipam

import (
	"fmt"
	"math/big"
	"net/netip"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// PoolGVR of FastpathLoadBalancerIPPool (deploy/crds/fastpathloadbalancerippools.yaml).
var PoolGVR = schema.GroupVersionResource{Group: "fastpath.io", Version: "v1alpha1", Resource: "fastpathloadbalancerippools"}

// Block is an inclusive address range of one family.
type Block struct{ From, To netip.Addr }

// Contains reports whether a is in b.
func (b Block) Contains(a netip.Addr) bool {
	return a.BitLen() == b.From.BitLen() && b.From.Compare(a) <= 0 && a.Compare(b.To) <= 0
}

func (b Block) overlaps(o Block) bool {
	return b.From.BitLen() == o.From.BitLen() && b.From.Compare(o.To) <= 0 && o.From.Compare(b.To) <= 0
}

// size is the number of addresses in b.
func (b Block) size() *big.Int {
	n := new(big.Int).Sub(new(big.Int).SetBytes(b.To.AsSlice()), new(big.Int).SetBytes(b.From.AsSlice()))
	return n.Add(n, big.NewInt(1))
}

// Pool is a FastpathLoadBalancerIPPool as the allocator needs it.
type Pool struct {
	Name     string
	Blocks   []Block
	Selector labels.Selector // matches every Service when empty
	Disabled bool
	Created  time.Time
}

// Contains reports whether a is in one of p's blocks.
func (p *Pool) Contains(a netip.Addr) bool {
	for _, b := range p.Blocks {
		if b.Contains(a) {
			return true
		}
	}
	return false
}

// Size is the number of addresses in p (blocks of one pool that overlap
// each other are counted twice; the CRD documents blocks as disjoint).
func (p *Pool) Size() *big.Int {
	n := new(big.Int)
	for _, b := range p.Blocks {
		n.Add(n, b.size())
	}
	return n
}

// poolSpec mirrors the CRD's spec for decoding.
type poolSpec struct {
	Blocks []struct {
		CIDR  string `json:"cidr"`
		Start string `json:"start"`
		Stop  string `json:"stop"`
	} `json:"blocks"`
	ServiceSelector *metav1.LabelSelector `json:"serviceSelector"`
	Disabled        bool                  `json:"disabled"`
}

// ParsePool reads a FastpathLoadBalancerIPPool. The apiserver's CEL rules
// refuse most bad input; this repeats the checks (and adds the IPv6 range
// order, which CEL cannot compare) so that an object stored before the
// rules existed is reported with its field instead of misused.
func ParsePool(u *unstructured.Unstructured) (*Pool, error) {
	raw, _, _ := unstructured.NestedMap(u.Object, "spec")
	var spec poolSpec
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(raw, &spec); err != nil {
		return nil, fmt.Errorf("spec: %w", err)
	}
	p := &Pool{Name: u.GetName(), Disabled: spec.Disabled, Created: u.GetCreationTimestamp().Time, Selector: labels.Everything()}
	if spec.ServiceSelector != nil {
		sel, err := metav1.LabelSelectorAsSelector(spec.ServiceSelector)
		if err != nil {
			return nil, fmt.Errorf("spec.serviceSelector: %w", err)
		}
		p.Selector = sel
	}
	if len(spec.Blocks) == 0 {
		return nil, fmt.Errorf("spec.blocks: at least one block is required")
	}
	for i, b := range spec.Blocks {
		blk, err := parseBlock(b.CIDR, b.Start, b.Stop)
		if err != nil {
			return nil, fmt.Errorf("spec.blocks[%d].%w", i, err)
		}
		p.Blocks = append(p.Blocks, blk)
	}
	return p, nil
}

func parseBlock(cidr, start, stop string) (Block, error) {
	if cidr != "" {
		if start != "" || stop != "" {
			return Block{}, fmt.Errorf("cidr: a block is either cidr or start and stop")
		}
		pfx, err := netip.ParsePrefix(cidr)
		if err != nil || pfx.Addr().Is4In6() || pfx.Masked() != pfx {
			return Block{}, fmt.Errorf("cidr: %q is not a CIDR without host bits", cidr)
		}
		if !pfx.Addr().IsGlobalUnicast() {
			return Block{}, fmt.Errorf("cidr: %s is not a routable unicast network", cidr)
		}
		b := Block{From: pfx.Addr(), To: lastAddr(pfx)}
		if sp, ok := spansSpecial(b); ok {
			return Block{}, fmt.Errorf("cidr: %s contains %s, which is not routable unicast", cidr, sp)
		}
		return b, nil
	}
	from, err1 := netip.ParseAddr(start)
	to, err2 := netip.ParseAddr(stop)
	switch {
	case err1 != nil || from.Is4In6() || from.Zone() != "":
		return Block{}, fmt.Errorf("start: %q is not an IP address", start)
	case err2 != nil || to.Is4In6() || to.Zone() != "":
		return Block{}, fmt.Errorf("stop: %q is not an IP address", stop)
	case !from.IsGlobalUnicast():
		return Block{}, fmt.Errorf("start: %s is not a routable unicast address", from)
	case !to.IsGlobalUnicast():
		return Block{}, fmt.Errorf("stop: %s is not a routable unicast address", to)
	case from.BitLen() != to.BitLen():
		return Block{}, fmt.Errorf("stop: %s is not of the same IP family as start %s", to, from)
	case to.Less(from):
		return Block{}, fmt.Errorf("stop: %s is lower than start %s", to, from)
	}
	b := Block{From: from, To: to}
	if sp, ok := spansSpecial(b); ok {
		return Block{}, fmt.Errorf("stop: the range %s-%s contains %s, which is not routable unicast", from, to, sp)
	}
	return b, nil
}

// specialBlocks are the networks no LoadBalancer address may come from,
// even inside a block whose ends are routable (126.255.255.255 to
// 128.0.0.0 spans loopback).
var specialBlocks = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/3"), // multicast, reserved and broadcast
	netip.MustParsePrefix("::/8"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("ff00::/8"),
}

// spansSpecial reports the first special network b overlaps.
func spansSpecial(b Block) (netip.Prefix, bool) {
	for _, sp := range specialBlocks {
		if sp.Addr().BitLen() != b.From.BitLen() {
			continue
		}
		if !lastAddr(sp).Less(b.From) && !b.To.Less(sp.Addr()) {
			return sp, true
		}
	}
	return netip.Prefix{}, false
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// Overlaps returns, for each pool that overlaps an older one, the name of
// the oldest such pool. The older pool keeps working; the newer one is
// reported (the Conflict condition) and gives out no new address, so
// adding a pool never takes addresses away from Services that hold them.
// Pools must be sorted oldest first (SortPools).
func Overlaps(pools []*Pool) map[string]string {
	out := map[string]string{}
	for i, p := range pools {
	older:
		for _, o := range pools[:i] {
			for _, b := range p.Blocks {
				for _, ob := range o.Blocks {
					if b.overlaps(ob) {
						out[p.Name] = o.Name
						break older
					}
				}
			}
		}
	}
	return out
}
