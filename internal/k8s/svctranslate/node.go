package svctranslate

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
)

// NodeFromObject reads this node's facts from its Node object: the zone
// label and the InternalIP and ExternalIP addresses, in the object's order.
// cidrs is --nodeport-addresses. A nil node (not registered yet) gives a
// Node with only the name: no NodePort frontends until it appears.
func NodeFromObject(name string, node *corev1.Node, cidrs []netip.Prefix) Node {
	n := Node{Name: name, NodePortCIDRs: cidrs}
	if node == nil {
		return n
	}
	n.Zone = node.Labels[corev1.LabelTopologyZone]
	for _, a := range node.Status.Addresses {
		if a.Type != corev1.NodeInternalIP && a.Type != corev1.NodeExternalIP {
			continue
		}
		ip, err := netip.ParseAddr(a.Address)
		if err == nil && !containsAddr(n.Addresses, ip.Unmap()) {
			n.Addresses = append(n.Addresses, ip.Unmap())
		}
	}
	return n
}
