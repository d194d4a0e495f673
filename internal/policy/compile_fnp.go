package policy

import (
	"fmt"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/fastpath-net/fastpath/internal/fpnetpol"
	"github.com/fastpath-net/fastpath/internal/identity"
)

// clusterwideNS is the byNS key of FastpathClusterwideNetworkPolicies (no
// namespace has an empty name).
const clusterwideNS = ""

// l7Spec is the HTTP part of one toPorts entry.
type l7Spec struct {
	allowAll bool // no http list: every request (the entry has only denies)
	allow    []HTTPRule
	deny     []HTTPRule
}

// nsLabels are a pod's labels plus its namespace under
// fpnetpol.NamespaceLabel, without copying them.
type nsLabels struct {
	set labels.Set
	ns  string
}

func (l nsLabels) Has(k string) bool {
	if k == fpnetpol.NamespaceLabel {
		return true
	}
	_, ok := l.set[k]
	return ok
}

func (l nsLabels) Lookup(k string) (string, bool) {
	if k == fpnetpol.NamespaceLabel {
		return l.ns, true
	}
	v, ok := l.set[k]
	return v, ok
}

func (l nsLabels) Get(k string) string {
	if k == fpnetpol.NamespaceLabel {
		return l.ns
	}
	return l.set[k]
}

// compileFastpath reduces a FastpathNetworkPolicy or
// FastpathClusterwideNetworkPolicy to the form NetworkPolicies take. Its
// selectors see fpnetpol.NamespaceLabel; without a requirement on it they
// mean the policy's namespace (namespaced kind) or every namespace.
func compileFastpath(p *fpnetpol.Policy) *compiled {
	c := &compiled{name: p.Key(), ns: p.Namespace, fastpath: true}
	sel, err := metav1.LabelSelectorAsSelector(&p.Spec.EndpointSelector)
	if err != nil {
		c.problem("spec.endpointSelector", "%v; every pod it could select is enforced and the policy allows nothing", err)
		if p.Clusterwide() {
			c.podSel = labels.Nothing() // a namespace cannot bound the damage: select nothing
		}
	} else {
		c.podSel = sel
	}
	c.types = [2]bool{p.Spec.Ingress != nil, p.Spec.Egress != nil}
	if c.podSel == nil {
		return c
	}
	for i, r := range p.Spec.Ingress {
		path := fmt.Sprintf("spec.ingress[%d]", i)
		c.rules[Ingress] = append(c.rules[Ingress], c.fastpathRule(path, "fromEndpoints", "fromCIDR", r.FromEndpoints, r.FromCIDR, r.ToPorts))
	}
	for i, r := range p.Spec.Egress {
		path := fmt.Sprintf("spec.egress[%d]", i)
		c.rules[Egress] = append(c.rules[Egress], c.fastpathRule(path, "toEndpoints", "toCIDR", r.ToEndpoints, r.ToCIDR, r.ToPorts))
	}
	return c
}

func (c *compiled) fastpathRule(path, epField, cidrField string, eps []metav1.LabelSelector, cidrs []string, ports []fpnetpol.PortRule) rule {
	r := rule{path: path, allPeers: len(eps) == 0 && len(cidrs) == 0}
	for i := range eps {
		if s, ok := c.endpointSelector(fmt.Sprintf("%s.%s[%d]", path, epField, i), &eps[i]); ok {
			r.peers = append(r.peers, peer{sel: s})
		}
	}
	for i, s := range cidrs {
		f := fmt.Sprintf("%s.%s[%d]", path, cidrField, i)
		if b, ok := c.ipBlock(f, &networkingv1.IPBlock{CIDR: s}); ok {
			r.peers = append(r.peers, peer{block: b, field: f})
		}
	}
	n := 0
	for i, pr := range ports {
		f := fmt.Sprintf("%s.toPorts[%d]", path, i)
		l7, l7ok := c.l7(f+".rules", pr.Rules)
		for j, pt := range pr.Ports {
			n++
			ps, ok := c.fastpathPort(fmt.Sprintf("%s.ports[%d]", f, j), pt, l7)
			if ok && l7ok {
				r.ports = append(r.ports, ps)
			}
		}
	}
	r.broken = n > 0 && len(r.ports) == 0
	return r
}

// endpointSelector converts a peer selector over pod labels and the
// namespace label.
func (c *compiled) endpointSelector(f string, ls *metav1.LabelSelector) (*selector, bool) {
	sel, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		c.problem(f, "%v; the peer allows nothing", err)
		return nil, false
	}
	s := &selector{ep: sel, ns: c.ns}
	reqs, _ := sel.Requirements()
	for _, r := range reqs {
		switch {
		case r.Key() == fpnetpol.NamespaceLabel:
			s.ns = "" // the selector says which namespaces
		case identity.ExcludedPodLabel(r.Key()):
			c.problem(f, "label %q is not part of identities; the peer allows nothing", r.Key())
			return nil, false
		}
	}
	s.key = fmt.Sprintf("ep:ns=%s %s", s.ns, sel.String())
	if s.ns == "" {
		s.key = "ep:* " + sel.String()
	}
	return s, true
}

func (c *compiled) fastpathPort(f string, p fpnetpol.Port, l7 *l7Spec) (portSpec, bool) {
	ps := portSpec{proto: TCP, l7: l7}
	if p.Protocol != "" {
		proto, err := ParseProto(p.Protocol)
		if err != nil {
			c.problem(f+".protocol", "%v; the rule allows nothing", err)
			return ps, false
		}
		ps.proto = proto
	}
	if p.Port < 1 || p.Port > 65535 {
		c.problem(f+".port", "%d outside 1-65535; the rule allows nothing", p.Port)
		return ps, false
	}
	ps.port, ps.endPort = uint16(p.Port), uint16(p.Port)
	if p.EndPort != 0 {
		if p.EndPort < p.Port || p.EndPort > 65535 {
			c.problem(f+".endPort", "%d not in %d-65535; the rule allows nothing", p.EndPort, p.Port)
			return ps, false
		}
		ps.endPort = uint16(p.EndPort)
	}
	if l7 != nil && (ps.proto != TCP || ps.port != ps.endPort) {
		c.problem(f, "HTTP rules need a single TCP port; the rule allows nothing")
		return ps, false
	}
	return ps, true
}

// l7 compiles a toPorts entry's HTTP rules. An allow whose expressions do
// not compile matches nothing; a deny that does not compile denies every
// request (fail closed both ways). ok is false for rules with nothing in
// them, which the CRD refuses.
func (c *compiled) l7(f string, r *fpnetpol.L7Rules) (*l7Spec, bool) {
	if r == nil {
		return nil, true
	}
	if r.HTTP == nil && r.HTTPDeny == nil {
		c.problem(f, "neither http nor httpDeny; the rule allows nothing")
		return nil, false
	}
	out := &l7Spec{allowAll: r.HTTP == nil}
	bad := map[int]string{}
	for _, e := range fpnetpol.CheckHTTP(f+".http", r.HTTP) {
		c.problem(e.Field, "%v; this HTTP rule allows nothing", e.Err)
		bad[indexOf(f+".http", e.Field)] = e.Field
	}
	for i, h := range r.HTTP {
		if _, broken := bad[i]; !broken {
			out.allow = append(out.allow, HTTPRule{Ref: RuleRef{Policy: c.name, Path: fmt.Sprintf("%s.http[%d]", f, i)}, Rule: h})
		}
	}
	clear(bad)
	for _, e := range fpnetpol.CheckHTTP(f+".httpDeny", r.HTTPDeny) {
		c.problem(e.Field, "%v; this deny refuses every request of its ports", e.Err)
		bad[indexOf(f+".httpDeny", e.Field)] = e.Field
	}
	for i, h := range r.HTTPDeny {
		if _, broken := bad[i]; broken {
			h = fpnetpol.HTTPRule{} // matches every request
		}
		out.deny = append(out.deny, HTTPRule{Ref: RuleRef{Policy: c.name, Path: fmt.Sprintf("%s.httpDeny[%d]", f, i)}, Rule: h})
	}
	return out, true
}

// indexOf reads i from a field prefix[i]....
func indexOf(prefix, field string) int {
	var i int
	fmt.Sscanf(field[len(prefix):], "[%d]", &i)
	return i
}

// selectsIn reports whether the policy applies to a pod of namespace ns.
func (c *compiled) selectsIn(ns string, podLabels labels.Set) bool {
	if c.podSel == nil {
		return c.ns == ns
	}
	if !c.fastpath {
		return c.ns == ns && c.podSel.Matches(podLabels)
	}
	return (c.ns == clusterwideNS || c.ns == ns) && c.podSel.Matches(nsLabels{podLabels, ns})
}
