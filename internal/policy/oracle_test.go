package policy_test

import (
	"net/netip"
	"sort"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/fastpath-net/fastpath/internal/policy"
)

// oracle decides one connection straight from the API objects, the way the
// NetworkPolicy documentation reads: no identities, no tables.
func oracle(w *world, src, dst *corev1.Pod, proto policy.Proto, port uint16) bool {
	return allowedBy(w, src, networkingv1.PolicyTypeEgress, dst, proto, port) &&
		allowedBy(w, dst, networkingv1.PolicyTypeIngress, src, proto, port)
}

// allowedBy: is traffic between subject (whose policies apply) and peer
// allowed in direction dir? target is the pod whose ports are dialled.
func allowedBy(w *world, subject *corev1.Pod, dir networkingv1.PolicyType, peer *corev1.Pod, proto policy.Proto, port uint16) bool {
	target := subject
	if dir == networkingv1.PolicyTypeEgress {
		target = peer
	}
	selected := false
	for _, np := range w.pols {
		if np.Namespace != subject.Namespace || !selectorMatches(&np.Spec.PodSelector, subject.Labels) || !hasType(np, dir) {
			continue
		}
		selected = true
		if dir == networkingv1.PolicyTypeIngress {
			for _, r := range np.Spec.Ingress {
				if peersMatch(w, np.Namespace, r.From, peer) && portsMatch(r.Ports, target, proto, port) {
					return true
				}
			}
		} else {
			for _, r := range np.Spec.Egress {
				if peersMatch(w, np.Namespace, r.To, peer) && portsMatch(r.Ports, target, proto, port) {
					return true
				}
			}
		}
	}
	return !selected
}

func hasType(np *networkingv1.NetworkPolicy, t networkingv1.PolicyType) bool {
	if len(np.Spec.PolicyTypes) == 0 {
		return t == networkingv1.PolicyTypeIngress || len(np.Spec.Egress) > 0
	}
	for _, x := range np.Spec.PolicyTypes {
		if x == t {
			return true
		}
	}
	return false
}

func selectorMatches(ls *metav1.LabelSelector, l map[string]string) bool {
	s, err := metav1.LabelSelectorAsSelector(ls)
	return err == nil && s.Matches(labels.Set(l))
}

func peersMatch(w *world, polNS string, peers []networkingv1.NetworkPolicyPeer, p *corev1.Pod) bool {
	if len(peers) == 0 {
		return true
	}
	for _, pe := range peers {
		if pe.IPBlock != nil {
			if ipBlockMatches(pe.IPBlock, p) {
				return true
			}
			continue
		}
		nsOK := p.Namespace == polNS
		if pe.NamespaceSelector != nil {
			ns := w.ns[p.Namespace]
			nsOK = ns != nil && selectorMatches(pe.NamespaceSelector, ns.Labels)
		}
		podOK := pe.PodSelector == nil || selectorMatches(pe.PodSelector, p.Labels)
		if nsOK && podOK {
			return true
		}
	}
	return false
}

func ipBlockMatches(b *networkingv1.IPBlock, p *corev1.Pod) bool {
	cidr, err := netip.ParsePrefix(b.CIDR)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(p.Status.PodIP)
	if err != nil || !cidr.Contains(ip) {
		return false
	}
	for _, e := range b.Except {
		if x, err := netip.ParsePrefix(e); err == nil && x.Contains(ip) {
			return false
		}
	}
	return true
}

func portsMatch(ports []networkingv1.NetworkPolicyPort, target *corev1.Pod, proto policy.Proto, port uint16) bool {
	if len(ports) == 0 {
		return true
	}
	for _, pp := range ports {
		pr := corev1.ProtocolTCP
		if pp.Protocol != nil {
			pr = *pp.Protocol
		}
		if p, _ := policy.ParseProto(string(pr)); p != proto {
			continue
		}
		if pp.Port == nil {
			return true
		}
		if pp.Port.StrVal != "" {
			for _, c := range target.Spec.Containers {
				for _, cp := range c.Ports {
					cpr := cp.Protocol
					if cpr == "" {
						cpr = corev1.ProtocolTCP
					}
					if cp.Name == pp.Port.StrVal && cpr == pr && uint16(cp.ContainerPort) == port {
						return true
					}
				}
			}
			continue
		}
		end := pp.Port.IntVal
		if pp.EndPort != nil {
			end = *pp.EndPort
		}
		if int32(port) >= pp.Port.IntVal && int32(port) <= end {
			return true
		}
	}
	return false
}

func sortStrings(s []string) { sort.Strings(s) }
