package bgp

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/fastpath-net/fastpath/internal/loadbalancer"
)

// Selector keys every Service carries besides its labels, as in
// FastpathLoadBalancerIPPool.
const (
	ServiceNamespaceLabel = "io.kubernetes.service.namespace"
	ServiceNameLabel      = "io.kubernetes.service.name"
)

// Node is what the desired state needs of this node.
type Node struct {
	Name     string
	Labels   map[string]string
	PodCIDRs []netip.Prefix
	// RouterID is the node's first IPv4 InternalIP (BGP identifiers are
	// 32 bits); without one the node cannot speak BGP.
	RouterID netip.Addr
}

// Desired is the speaker this node should run: no peers means none.
type Desired struct {
	ASN      uint32
	RouterID netip.Addr
	Peers    map[netip.Addr]PeerSpec
	Prefixes map[netip.Prefix]bool
}

// PeerSpec is a peer with the local ASN of the policy that named it.
type PeerSpec struct {
	Peer
	LocalASN uint32
	Policy   string
}

// Compute is the pure desired state: the policies selecting node (in name
// order; the first one's ASN is the speaker's, each peer keeps its own
// policy's local ASN), and the prefixes they advertise: the announceable
// LoadBalancer IPs of the Services each selects (labels gives a Service's
// labels) and, if asked, the node's pod CIDRs. Prefixes go to every peer.
// A peer named by two policies is taken from the first; the second is
// reported, as is a node without a router ID.
func Compute(policies []*Policy, node Node, announce loadbalancer.Announceable, svcLabels func(loadbalancer.ServiceName) map[string]string) (Desired, []error) {
	d := Desired{Peers: map[netip.Addr]PeerSpec{}, Prefixes: map[netip.Prefix]bool{}}
	var errs []error
	sorted := slices.Clone(policies)
	slices.SortFunc(sorted, func(a, b *Policy) int { return strings.Compare(a.Name, b.Name) })
	nodeLabels := labels.Set(node.Labels)
	for _, p := range sorted {
		if !p.NodeSelector.Matches(nodeLabels) {
			continue
		}
		if !node.RouterID.Is4() {
			return Desired{}, []error{fmt.Errorf("node %s: no IPv4 InternalIP to use as the BGP router ID; policy %s is not applied", node.Name, p.Name)}
		}
		if d.ASN == 0 {
			d.ASN, d.RouterID = p.LocalASN, node.RouterID
		}
		for i, peer := range p.Peers {
			if prev, ok := d.Peers[peer.Address]; ok {
				errs = append(errs, fmt.Errorf("policy %s: spec.peers[%d].address: %s is already a peer of policy %s on node %s; ignored", p.Name, i, peer.Address, prev.Policy, node.Name))
				continue
			}
			d.Peers[peer.Address] = PeerSpec{Peer: peer, LocalASN: p.LocalASN, Policy: p.Name}
		}
		if p.PodCIDR {
			for _, c := range node.PodCIDRs {
				d.Prefixes[c.Masked()] = true
			}
		}
		if !p.LoadBalancerIPs {
			continue
		}
		for name, ips := range announce {
			set := labels.Set{ServiceNamespaceLabel: name.Namespace, ServiceNameLabel: name.Name}
			for k, v := range svcLabels(name) {
				set[k] = v
			}
			if !p.ServiceSelector.Matches(set) {
				continue
			}
			for _, ip := range ips {
				d.Prefixes[netip.PrefixFrom(ip, ip.BitLen())] = true
			}
		}
	}
	return d, errs
}
