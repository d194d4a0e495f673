package flows

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/fastpath-net/fastpath/internal/datapath/policymap"
	"github.com/fastpath-net/fastpath/internal/identity"
	"github.com/fastpath-net/fastpath/internal/policy"
)

// Names resolves the numbers a verdict record carries. Every method
// returns zero values for what it does not know: an event is published
// with what is known, never held back.
type Names interface {
	// Pod is the pod with address ip.
	Pod(ip netip.Addr) (namespace, name string)
	// Identity is an identity's namespace and pod labels ("k=v", sorted);
	// cidr is set for a CIDR identity.
	Identity(id identity.ID) (namespace string, labels []string, cidr string)
	// Service names the frontend of a rev-nat id for protocol proto:
	// "ns/name (10.96.0.10:80)".
	Service(revNatID uint32, proto uint8) string
	// Explain is the policy engine's reason for a policy verdict of the
	// pod: which policies enforce the direction, which rule allowed.
	Explain(namespace, pod string, dir policy.Direction, peer identity.ID, proto policy.Proto, port uint16) string
}

// FromVerdict turns one ring record into an event, names resolved and the
// reason a sentence.
func FromVerdict(v policymap.Verdict, now time.Time, n Names) Event {
	e := Event{
		Time:        now,
		Type:        TypeDrop,
		Verdict:     VerdictDropped,
		Direction:   policy.Direction(v.Dir).String(),
		Proto:       strings.ToUpper(policy.Proto(v.Proto).String()),
		Reason:      policymap.ReasonName(v.Reason),
		Source:      endpointOf(v.Saddr, v.Sport, identity.ID(v.SrcIdentity), n),
		Destination: endpointOf(v.Daddr, v.Dport, identity.ID(v.DstIdentity), n),
	}
	if v.Verdict == policymap.VerdictAllow {
		e.Type, e.Verdict = TypeAllow, VerdictAllowed
	}
	if v.Reason >= policymap.ReasonLBNoBackend && v.Reason <= policymap.ReasonLBNoRoute && v.Cookie != 0 {
		e.Destination.Service = n.Service(v.Cookie, v.Proto)
		// A service's namespace is its frontend's, for filters and the map.
		if ns, _, ok := strings.Cut(e.Destination.Service, "/"); ok && e.Destination.Namespace == "" {
			e.Destination.Namespace = ns
		}
	}
	e.Summary = summary(v, &e, n)
	return e
}

func endpointOf(addr [16]byte, port uint16, id identity.ID, n Names) Endpoint {
	a := netip.AddrFrom16(addr).Unmap()
	if a.IsUnspecified() {
		// sock_lb's records: the socket has no source address yet.
		return Endpoint{Port: port}
	}
	ep := Endpoint{IP: a.String(), Port: port, Identity: uint32(id)}
	ep.Namespace, ep.Pod = n.Pod(a)
	ns, labels, cidr := n.Identity(id)
	if ep.Namespace == "" {
		ep.Namespace = ns
	}
	ep.Labels = labels
	ep.World = ep.Pod == "" && (cidr != "" || id == identity.World || id == identity.WorldIPv4 || id == identity.WorldIPv6)
	return ep
}

// who names an end for a sentence: ns/pod, else the identity's labels,
// else the address.
func who(p *Endpoint) string {
	if p.IP == "" {
		return "a local socket"
	}
	if p.Pod != "" {
		return p.Namespace + "/" + p.Pod
	}
	if p.Namespace != "" {
		return fmt.Sprintf("%s (identity %d in %s: %s)", p.IP, p.Identity, p.Namespace, strings.Join(p.Labels, ","))
	}
	return p.IP
}

func (e *Event) flow() string {
	return fmt.Sprintf("%s -> %s %s/%d", who(&e.Source), who(&e.Destination), e.Proto, e.Destination.Port)
}

func summary(v policymap.Verdict, e *Event, n Names) string {
	svc := e.Destination.Service
	if svc == "" {
		svc = fmt.Sprintf("%s:%d", e.Destination.IP, e.Destination.Port)
	}
	switch v.Reason {
	case policymap.ReasonPolicyDenied, policymap.ReasonPolicyAllowed:
		word := "policy denied: "
		if v.Verdict == policymap.VerdictAllow {
			word = "policy allowed: "
		}
		local, peer := &e.Destination, identity.ID(v.SrcIdentity)
		if v.Dir == policymap.DirEgress {
			local, peer = &e.Source, identity.ID(v.DstIdentity)
		}
		if local.Pod != "" {
			if why := n.Explain(local.Namespace, local.Pod, policy.Direction(v.Dir), peer, policy.Proto(v.Proto), v.Dport); why != "" {
				return word + why
			}
		}
		return fmt.Sprintf("%s%s of endpoint %d, peer identity %s, %s", word, e.Direction, v.Endpoint, peer, e.flow())
	case policymap.ReasonCTFull:
		return "policy CT map full: new flow dropped (fail closed, its replies could not pass): " + e.flow()
	case policymap.ReasonRelated:
		return "policy allowed: related to an allowed flow: " + e.flow()
	case policymap.ReasonForwarded:
		return "forwarded: no ingress policy selects " + who(&e.Destination) + ": " + e.flow()
	case policymap.ReasonLBNoBackend:
		if e.Source.IP == "" {
			return fmt.Sprintf("no backend for service %s: connect() refused (ECONNREFUSED) by the socket load balancer", svc)
		}
		return fmt.Sprintf("no backend for service %s: rejected with ICMP port unreachable (from %s)", svc, who(&e.Source))
	case policymap.ReasonLBSourceRange:
		return fmt.Sprintf("source range denied: %s is outside loadBalancerSourceRanges of service %s", e.Source.IP, svc)
	case policymap.ReasonLBCTFull:
		return "CT map full: cannot track new flow, dropped (fp_ct insert failed): " + e.flow()
	case policymap.ReasonLBMalformed:
		return "malformed packet: bad IPv4 or transport header, or a rewrite failed: " + e.flow()
	case policymap.ReasonLBBackendGone:
		return fmt.Sprintf("backend gone: service %s names a backend that no longer exists: %s", svc, e.flow())
	case policymap.ReasonLBSNATNoPort:
		return "NAT port exhaustion: no free source port (--snat-ports) for " + e.flow()
	case policymap.ReasonLBNoRoute:
		return "no route: masqueraded packet has no route, neighbour or MTU towards " + e.flow()
	case policymap.ReasonSpoofed:
		// The source names whoever owns the forged address, not the
		// sender: the endpoint and its identity say who sent it.
		return fmt.Sprintf("source address spoofed: the pod of endpoint %d (identity %s) sent from %s, not its own address: dropped: %s",
			v.Endpoint, identity.ID(v.SrcIdentity), e.Source.IP, e.flow())
	case policymap.ReasonProxyRedirect:
		return fmt.Sprintf("to L7 proxy: allowed at L4, %s has HTTP rules for it; the node's proxy judges each request: %s", l7Side(v, e), e.flow())
	case policymap.ReasonNoProxy:
		return fmt.Sprintf("L7 proxy unavailable: %s has HTTP rules for this flow, but no proxy can take it here "+
			"(--enable-l7-proxy off on this node, or a path the datapath cannot redirect: the client's egress on a masqueraded Service flow, judged by tc_lb): dropped, fail closed: %s", l7Side(v, e), e.flow())
	}
	return fmt.Sprintf("%s (reason %d): %s", e.Reason, v.Reason, e.flow())
}

// l7Side names the policy an L7 record is about: the destination's ingress
// or the source's egress.
func l7Side(v policymap.Verdict, e *Event) string {
	if v.Dir == policymap.DirEgress {
		return "the egress of " + who(&e.Source)
	}
	return "the ingress of " + who(&e.Destination)
}
