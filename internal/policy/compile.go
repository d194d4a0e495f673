package policy

import (
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/fastpath-net/fastpath/internal/identity"
)

// compiled is a NetworkPolicy reduced to what the computation needs.
type compiled struct {
	name string // namespace/name
	ns   string
	// podSel selects the endpoints in ns; nil when it is invalid, in which
	// case every pod of ns is treated as selected (fail closed).
	podSel   labels.Selector
	types    [2]bool
	rules    [2][]rule
	problems []Problem
	// fastpath: a FastpathNetworkPolicy (ns is its namespace) or
	// FastpathClusterwideNetworkPolicy (ns is clusterwideNS), whose
	// selectors see the namespace label (compile_fnp.go).
	fastpath bool
}

type rule struct {
	path     string
	allPeers bool // no from/to: every peer
	peers    []peer
	ports    []portSpec // empty: every port of every protocol
	broken   bool       // every port is bad: the rule allows nothing
}

type peer struct {
	sel   *selector // pod/namespace selector, nil for ipBlock
	block *ipBlock
	field string // of the block, for problems
}

type portSpec struct {
	proto         Proto
	port, endPort uint16  // 0,0: every port
	name          string  // named port, resolved per pod
	l7            *l7Spec // HTTP rules (FastpathNetworkPolicy); nil: L4 only
}

type ipBlock struct {
	cidr   netip.Prefix
	except []netip.Prefix
}

// selector selects identities by their labels: a peer's podSelector in the
// policy's namespace, a namespaceSelector, or both.
type selector struct {
	key   string
	ns    string          // policy namespace when there is no namespaceSelector
	pod   labels.Selector // nil: any pod
	nsSel labels.Selector // nil: the policy's namespace only
	// ep: a FastpathNetworkPolicy endpoint selector over pod labels and
	// the namespace label; ns "" then means every namespace.
	ep labels.Selector
}

func (s *selector) matches(l identity.Labels, podSet, nsSet labels.Set) bool {
	if s.ep != nil {
		return (s.ns == "" || l.Namespace() == s.ns) && s.ep.Matches(nsLabels{podSet, l.Namespace()})
	}
	if s.nsSel == nil {
		if l.Namespace() != s.ns {
			return false
		}
	} else if !s.nsSel.Matches(nsSet) {
		return false
	}
	return s.pod == nil || s.pod.Matches(podSet)
}

func compile(np *networkingv1.NetworkPolicy) *compiled {
	c := &compiled{name: np.Namespace + "/" + np.Name, ns: np.Namespace}
	sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	if err != nil {
		// Which pods it selects is unknown: all of the namespace become
		// enforced in its directions, and its rules allow nothing.
		c.problem("spec.podSelector", "%v; every pod of namespace %s is enforced and the policy allows nothing", err, np.Namespace)
	} else {
		c.podSel = sel
	}
	hasEgress := len(np.Spec.Egress) > 0
	if len(np.Spec.PolicyTypes) == 0 {
		c.types = [2]bool{true, hasEgress}
	}
	for i, t := range np.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			c.types[Ingress] = true
		case networkingv1.PolicyTypeEgress:
			c.types[Egress] = true
		default:
			c.problem(fmt.Sprintf("spec.policyTypes[%d]", i), "unknown type %q; both directions are enforced", t)
			c.types = [2]bool{true, true}
		}
	}
	if c.podSel == nil {
		return c
	}
	for i, r := range np.Spec.Ingress {
		c.rules[Ingress] = append(c.rules[Ingress], c.rule(fmt.Sprintf("spec.ingress[%d]", i), "from", r.From, r.Ports))
	}
	for i, r := range np.Spec.Egress {
		c.rules[Egress] = append(c.rules[Egress], c.rule(fmt.Sprintf("spec.egress[%d]", i), "to", r.To, r.Ports))
	}
	return c
}

func (c *compiled) problem(field, format string, args ...any) {
	c.problems = append(c.problems, Problem{Policy: c.name, Field: field, Msg: fmt.Sprintf(format, args...)})
}

func (c *compiled) rule(path, peersField string, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort) rule {
	r := rule{path: path, allPeers: len(peers) == 0}
	for i, p := range peers {
		f := fmt.Sprintf("%s.%s[%d]", path, peersField, i)
		if pe, ok := c.peer(f, p); ok {
			r.peers = append(r.peers, pe)
		}
	}
	for i, p := range ports {
		if ps, ok := c.port(fmt.Sprintf("%s.ports[%d]", path, i), p); ok {
			r.ports = append(r.ports, ps)
		}
	}
	// Dropping a bad port or peer narrows the rule (fail closed), but no
	// ports left would read as "every port": the rule allows nothing then.
	r.broken = len(ports) > 0 && len(r.ports) == 0
	return r
}

func (c *compiled) peer(f string, p networkingv1.NetworkPolicyPeer) (peer, bool) {
	if p.IPBlock != nil {
		if p.PodSelector != nil || p.NamespaceSelector != nil {
			c.problem(f, "ipBlock together with a selector; the peer allows nothing")
			return peer{}, false
		}
		b, ok := c.ipBlock(f+".ipBlock", p.IPBlock)
		return peer{block: b, field: f + ".ipBlock"}, ok
	}
	if p.PodSelector == nil && p.NamespaceSelector == nil {
		c.problem(f, "empty peer (no podSelector, namespaceSelector or ipBlock); it allows nothing")
		return peer{}, false
	}
	s := &selector{ns: c.ns}
	ok := true
	if p.PodSelector != nil {
		s.pod, ok = c.labelSelector(f+".podSelector", p.PodSelector, true)
	}
	if p.NamespaceSelector != nil && ok {
		s.nsSel, ok = c.labelSelector(f+".namespaceSelector", p.NamespaceSelector, false)
	}
	if !ok {
		return peer{}, false
	}
	s.key = selectorKey(s, p)
	return peer{sel: s}, true
}

func selectorKey(s *selector, p networkingv1.NetworkPolicyPeer) string {
	k := "pods:*"
	if s.pod != nil {
		k = "pods:" + s.pod.String()
	}
	if s.nsSel == nil {
		return "ns=" + s.ns + " " + k
	}
	return "nsSel:" + s.nsSel.String() + " " + k
}

// labelSelector converts a peer selector. Keys left out of identities
// (identity.ExcludedPodLabel) cannot be matched by identity: fail closed.
func (c *compiled) labelSelector(f string, ls *metav1.LabelSelector, pods bool) (labels.Selector, bool) {
	sel, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		c.problem(f, "%v; the peer allows nothing", err)
		return nil, false
	}
	if pods {
		reqs, _ := sel.Requirements()
		for _, r := range reqs {
			if identity.ExcludedPodLabel(r.Key()) {
				c.problem(f, "label %q is not part of identities; the peer allows nothing", r.Key())
				return nil, false
			}
		}
	}
	if sel.Empty() {
		return labels.Everything(), true
	}
	return sel, true
}

func (c *compiled) ipBlock(f string, b *networkingv1.IPBlock) (*ipBlock, bool) {
	cidr, err := netip.ParsePrefix(b.CIDR)
	if err != nil {
		c.problem(f+".cidr", "%v; the peer allows nothing", err)
		return nil, false
	}
	out := &ipBlock{cidr: cidr.Masked()}
	for i, e := range b.Except {
		ep, err := netip.ParsePrefix(e)
		switch {
		case err != nil:
			c.problem(fmt.Sprintf("%s.except[%d]", f, i), "%v; the peer allows nothing", err)
			return nil, false
		case ep.Addr().Is4() != cidr.Addr().Is4() || ep.Bits() < cidr.Bits() || !cidr.Contains(ep.Addr()):
			c.problem(fmt.Sprintf("%s.except[%d]", f, i), "%s is not inside cidr %s; the peer allows nothing", e, b.CIDR)
			return nil, false
		}
		out.except = append(out.except, ep.Masked())
	}
	return out, true
}

func (c *compiled) port(f string, p networkingv1.NetworkPolicyPort) (portSpec, bool) {
	ps := portSpec{proto: TCP}
	if p.Protocol != nil {
		switch *p.Protocol {
		case corev1.ProtocolTCP:
		case corev1.ProtocolUDP:
			ps.proto = UDP
		case corev1.ProtocolSCTP:
			ps.proto = SCTP
		default:
			c.problem(f+".protocol", "unknown protocol %q; the rule allows nothing", *p.Protocol)
			return ps, false
		}
	}
	if p.Port == nil {
		if p.EndPort != nil {
			c.problem(f+".endPort", "endPort without port; the rule allows nothing")
			return ps, false
		}
		return ps, true
	}
	if p.Port.Type == 1 { // intstr.String: a named port
		if p.EndPort != nil {
			c.problem(f+".endPort", "endPort with named port %q; the rule allows nothing", p.Port.StrVal)
			return ps, false
		}
		ps.name = p.Port.StrVal
		return ps, true
	}
	n := p.Port.IntVal
	if n < 1 || n > 65535 {
		c.problem(f+".port", "%d outside 1-65535; the rule allows nothing", n)
		return ps, false
	}
	ps.port, ps.endPort = uint16(n), uint16(n)
	if p.EndPort != nil {
		e := *p.EndPort
		if e < n || e > 65535 {
			c.problem(f+".endPort", "%d not in %d-65535; the rule allows nothing", e, n)
			return ps, false
		}
		ps.endPort = uint16(e)
	}
	return ps, true
}
