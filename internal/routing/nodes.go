package routing

import (
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
)

// NodeFromObject reads a Node object. A node is routable once it has an
// InternalIP and pod CIDRs; until then it is returned with what it has, and
// Desired skips it. An unparsable field is an error naming it.
func NodeFromObject(o *corev1.Node) (Node, error) {
	n := Node{Name: o.Name}
	cidrs := o.Spec.PodCIDRs
	field := "spec.podCIDRs"
	if len(cidrs) == 0 && o.Spec.PodCIDR != "" {
		cidrs, field = []string{o.Spec.PodCIDR}, "spec.podCIDR"
	}
	for i, s := range cidrs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return n, fmt.Errorf("node %s: %s[%d] %q is not a CIDR", o.Name, field, i, s)
		}
		n.PodCIDRs = append(n.PodCIDRs, p.Masked())
	}
	for i, a := range o.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		ip, err := netip.ParseAddr(a.Address)
		if err != nil {
			return n, fmt.Errorf("node %s: status.addresses[%d] (InternalIP) %q is not an IP address", o.Name, i, a.Address)
		}
		// IPv4 underlay only for now; an IPv6 InternalIP of a dual-stack
		// node is passed over, not an error.
		if ip.Unmap().Is4() && !n.IP.IsValid() {
			n.IP = ip.Unmap()
		}
	}
	// Only IPv4 pod CIDRs are routed: the tunnel and routes are IPv4.
	n.PodCIDRs = slicesDeleteV6(n.PodCIDRs)
	return n, nil
}

func slicesDeleteV6(ps []netip.Prefix) []netip.Prefix {
	out := ps[:0]
	for _, p := range ps {
		if p.Addr().Is4() {
			out = append(out, p)
		}
	}
	return out
}
