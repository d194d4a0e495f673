// Package routing connects pods across nodes. Every node learns from the
// Node objects which pod CIDRs the other nodes have (spec.podCIDRs) and where
// they are (the InternalIP), and makes its network namespace send traffic for
// those CIDRs there, in one of two modes:
//
//   - native: a route per remote pod CIDR via the node's underlay address;
//     the underlay must forward pod addresses between nodes (one L2 segment
//     or routers that know the pod CIDRs);
//   - vxlan: a route per remote pod CIDR into fp_vxlan, a kernel vxlan device
//     in external (collect-metadata) mode, whose egress program tc_tunnel sets
//     the tunnel endpoint from fp_tunnel_map, as in Cilium's tunnel mode; the
//     underlay only needs to carry UDP between node addresses.
//
// The desired state is a plain table (Desired); reconcilers diff it into the
// kernel's routes (tagged with our route protocol, so a restarted agent finds
// and corrects what its predecessor left, and never touches other routes) and
// into fp_tunnel_map.
package routing

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
)

// Mode is how pod traffic reaches other nodes.
type Mode string

const (
	ModeNative Mode = "native"
	ModeVXLAN  Mode = "vxlan"
)

// ParseMode accepts "native" and "vxlan".
func ParseMode(s string) (Mode, error) {
	switch Mode(s) {
	case ModeNative, ModeVXLAN:
		return Mode(s), nil
	}
	return "", fmt.Errorf("routing mode %q: want native or vxlan", s)
}

// RouteProtocol marks the routes this package installs (rtnetlink's
// protocol field; values up to 252 are free for routing daemons). A restarted
// agent lists routes of this protocol to find its own.
const RouteProtocol = 250

// VXLANOverhead is what encapsulation adds to a packet: outer IPv4 (20),
// UDP (8), VXLAN (8) and inner ethernet (14) headers.
const VXLANOverhead = 50

// Node is what routing needs to know of one Node object.
type Node struct {
	Name     string
	IP       netip.Addr // the InternalIP: where its pod CIDRs are reached
	PodCIDRs []netip.Prefix
}

// Route sends a remote node's pod CIDR to that node.
type Route struct {
	Dst  netip.Prefix
	Node netip.Addr // the node's underlay address
}

func (r Route) String() string { return r.Dst.String() + " via " + r.Node.String() }

// Desired returns the routes to every pod CIDR of the nodes but self, sorted
// by destination. A CIDR claimed by two nodes (a moment during a node's
// replacement) goes to the node whose name sorts first, so every agent
// decides the same way.
func Desired(nodes []Node, self string) []Route {
	byDst := map[netip.Prefix]Route{}
	owner := map[netip.Prefix]string{}
	for _, n := range nodes {
		if n.Name == self || !n.IP.IsValid() {
			continue
		}
		for _, p := range n.PodCIDRs {
			p = p.Masked()
			if o, ok := owner[p]; ok && o < n.Name {
				continue
			}
			owner[p] = n.Name
			byDst[p] = Route{Dst: p, Node: n.IP}
		}
	}
	out := make([]Route, 0, len(byDst))
	for _, r := range byDst {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Route) int {
		return cmp.Or(a.Dst.Addr().Compare(b.Dst.Addr()), cmp.Compare(a.Dst.Bits(), b.Dst.Bits()))
	})
	return out
}
