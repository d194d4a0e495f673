package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/fastpath-net/fastpath/internal/identity"
)

// Verdict answers whether a connection between two pods is allowed, and
// which rules or which default deny decided, per direction. It is computed
// from the same EndpointPolicy entries the datapath's maps are written
// from, with the datapath's lookup (Key.Matches).
type Verdict struct {
	From, To        string // namespace/pod, or an address outside the pods
	FromID, ToID    identity.ID
	Proto           Proto
	Port            uint16
	Allowed         bool
	Egress, Ingress Side
	// Problems of the policies of both namespaces (filled by callers that
	// want them shown): a fail-closed part may be why a packet is denied.
	Problems []string `json:",omitempty"`
}

// Side is the decision at one endpoint. A side that is no endpoint (an
// address outside the pods) has an empty Endpoint and allows: no policy
// of this cluster applies there.
type Side struct {
	Endpoint  PodName
	Dir       Direction
	Peer      identity.ID
	Enforced  bool
	Allowed   bool
	Rules     []RuleRef // the rules allowing it
	Selecting []string  // the policies enforcing the direction
}

// Trace decides a connection from one pod to another on proto/port. Both
// pods must be endpoints of the Engine (node "") and Changes must have run.
func (e *Engine) Trace(from, to PodName, proto Proto, port uint16) (Verdict, error) {
	return e.TraceEnds(from.String(), to.String(), proto, port)
}

// TraceEnds is Trace where either end may also be an address: a pod's
// address stands for the pod, any other address for the identity the
// ipcache gives it (a CIDR identity or the world), with no policy of its
// own.
func (e *Engine) TraceEnds(from, to string, proto Proto, port uint16) (Verdict, error) {
	v := Verdict{From: from, To: to, Proto: proto, Port: port}
	src, srcID, err := e.end(from)
	if err != nil {
		return v, err
	}
	dst, dstID, err := e.end(to)
	if err != nil {
		return v, err
	}
	v.FromID, v.ToID = srcID, dstID
	v.Egress = Side{Dir: Egress, Peer: dstID, Allowed: true}
	if src != nil {
		v.Egress = side(src, Egress, dstID, proto, port)
	}
	v.Ingress = Side{Dir: Ingress, Peer: srcID, Allowed: true}
	if dst != nil {
		v.Ingress = side(dst, Ingress, srcID, proto, port)
	}
	v.Allowed = v.Egress.Allowed && v.Ingress.Allowed
	return v, nil
}

// end resolves one end of a trace: a pod (namespace/name), a pod's
// address, or another address.
func (e *Engine) end(s string) (*EndpointPolicy, identity.ID, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		a = a.Unmap()
		if owners := e.ipOwners[a]; len(owners) > 0 {
			if ep, ok := e.endpoints[slices.MinFunc(owners, comparePods)]; ok {
				return ep, ep.Identity, nil
			}
		}
		return nil, e.lookupIPCache(a), nil
	}
	n, err := ParsePodName(s)
	if err != nil {
		return nil, 0, fmt.Errorf("%q: want namespace/pod or an IP address", s)
	}
	ep, ok := e.endpoints[n]
	if !ok {
		return nil, 0, fmt.Errorf("pod %s: not found (or host network, or finished)", n)
	}
	return ep, ep.Identity, nil
}

// lookupIPCache is the datapath's longest-prefix match over the desired
// ipcache (a scan: for tools, not for packets).
func (e *Engine) lookupIPCache(a netip.Addr) identity.ID {
	best, bits := identity.World, -1
	for p, id := range e.ipcache {
		if p.Contains(a) && p.Bits() > bits {
			best, bits = id, p.Bits()
		}
	}
	return best
}

func side(ep *EndpointPolicy, d Direction, peer identity.ID, proto Proto, port uint16) Side {
	rules, enforced := ep.Lookup(d, peer, proto, port)
	slices.SortFunc(rules, func(a, b RuleRef) int { return strings.Compare(a.String(), b.String()) })
	rules = slices.Compact(rules)
	return Side{Endpoint: ep.Pod, Dir: d, Peer: peer, Enforced: enforced, Allowed: !enforced || len(rules) > 0,
		Rules: rules, Selecting: ep.Selecting[d]}
}

func (v Verdict) String() string {
	word := "DENIED"
	if v.Allowed {
		word = "ALLOWED"
	}
	s := fmt.Sprintf("%s (identity %s) -> %s (identity %s) %s/%d: %s\n  %s\n  %s\n",
		v.From, v.FromID, v.To, v.ToID, v.Proto, v.Port, word, v.Egress.explain(v.Proto, v.Port), v.Ingress.explain(v.Proto, v.Port))
	for _, p := range v.Problems {
		s += "  not enforceable (fail closed): " + p + "\n"
	}
	return s
}

func (s Side) explain(proto Proto, port uint16) string {
	if s.Endpoint == (PodName{}) {
		return fmt.Sprintf("%s: not a pod of this cluster, no policy applies", s.Dir)
	}
	head := fmt.Sprintf("%s of %s: ", s.Dir, s.Endpoint)
	switch {
	case !s.Enforced:
		return head + "allowed: no policy selects the pod for " + s.Dir.String()
	case s.Allowed:
		refs := make([]string, len(s.Rules))
		for i, r := range s.Rules {
			refs[i] = r.String()
		}
		return head + "allowed by " + strings.Join(refs, ", ")
	}
	return fmt.Sprintf("%sdenied: enforced by %s, and no rule allows identity %s on %s/%d",
		head, strings.Join(s.Selecting, ", "), s.Peer, proto, port)
}

// Explain says in words why the endpoint's direction treats a packet from
// or to identity peer on proto/port as it does: the rules allowing it, or
// the policies enforcing a default deny. It is how a verdict event of the
// datapath (endpoint, direction, peer identity, port) becomes readable.
func (e *Engine) Explain(pod PodName, d Direction, peer identity.ID, proto Proto, port uint16) string {
	ep, ok := e.endpoints[pod]
	if !ok {
		return fmt.Sprintf("%s: no such endpoint", pod)
	}
	s := side(ep, d, peer, proto, port)
	return strings.Replace(s.explain(proto, port), "identity "+peer.String(), "identity "+e.DescribeIdentity(peer), 1)
}

// DescribeIdentity names an identity for people: number, namespace and
// pod labels, or its CIDR, or its reserved name.
func (e *Engine) DescribeIdentity(id identity.ID) string {
	d := e.describe(id)
	if num, rest, ok := strings.Cut(d, " "); ok {
		return num + " (" + rest + ")"
	}
	return d
}
