// Package policy computes, without touching the kernel, what the datapath
// must enforce for Kubernetes NetworkPolicies (networking.k8s.io/v1): per
// endpoint (pod), the set of {peer identity, direction, protocol, port
// range} it may talk with, and the ipcache (address -> identity) that turns
// a packet's peer address into that identity. The Engine keeps the inputs
// (namespaces, pods, policies) and recomputes only the endpoints a change
// can affect. docs/policy-datapath.md describes the BPF half.
package policy

import (
	"fmt"
	"strings"

	"github.com/fastpath-net/fastpath/internal/identity"
)

// Direction of traffic as seen from the endpoint.
type Direction uint8

const (
	Ingress Direction = iota
	Egress
)

func (d Direction) String() string {
	if d == Egress {
		return "egress"
	}
	return "ingress"
}

// Proto is an IP protocol number; 0 means every protocol.
type Proto uint8

const (
	AnyProto Proto = 0
	TCP      Proto = 6
	UDP      Proto = 17
	SCTP     Proto = 132
)

func (p Proto) String() string {
	switch p {
	case AnyProto:
		return "any"
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	case SCTP:
		return "sctp"
	}
	return fmt.Sprint(uint8(p))
}

// ParseProto reads tcp/udp/sctp in any case.
func ParseProto(s string) (Proto, error) {
	switch strings.ToLower(s) {
	case "tcp":
		return TCP, nil
	case "udp":
		return UDP, nil
	case "sctp":
		return SCTP, nil
	}
	return 0, fmt.Errorf("protocol %q: want TCP, UDP or SCTP", s)
}

// AnyIdentity in a Key matches every peer (a rule without from/to).
const AnyIdentity = identity.Unknown

// Key is one allowed combination; it is what a policy map entry says.
// Port 0 with EndPort 0 is every port of Proto; otherwise Port..EndPort.
type Key struct {
	Identity identity.ID
	Dir      Direction
	Proto    Proto
	Port     uint16
	EndPort  uint16
}

// Matches reports whether a packet of proto to port from/to peer id is
// covered by k. This is the lookup the datapath performs.
func (k Key) Matches(dir Direction, id identity.ID, proto Proto, port uint16) bool {
	if k.Dir != dir || (k.Identity != AnyIdentity && k.Identity != id) || (k.Proto != AnyProto && k.Proto != proto) {
		return false
	}
	return k.Port == 0 && k.EndPort == 0 || port >= k.Port && port <= k.EndPort
}

// RuleRef names the rule that allowed an entry: a policy and the rule's
// path inside it.
type RuleRef struct {
	Policy string // namespace/name
	Path   string // spec.ingress[0]
}

func (r RuleRef) String() string { return r.Policy + " " + r.Path }

// PodName is namespace/name.
type PodName struct{ Namespace, Name string }

func (p PodName) String() string { return p.Namespace + "/" + p.Name }

// ParsePodName reads namespace/name.
func ParsePodName(s string) (PodName, error) {
	ns, name, ok := strings.Cut(s, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return PodName{}, fmt.Errorf("%q: want namespace/pod", s)
	}
	return PodName{ns, name}, nil
}

// EndpointPolicy is the desired policy state of one endpoint.
type EndpointPolicy struct {
	Pod      PodName
	Identity identity.ID
	// Enforced per direction: some policy selects the pod for it, so what
	// Entries does not allow is denied. Not enforced: everything passes.
	Enforced [2]bool
	// Selecting lists the policies that select the pod, per direction.
	Selecting [2][]string
	Entries   map[Key][]RuleRef
	// L7 holds the entries whose flows go through the L7 proxy and the
	// HTTP rules it applies to them (FastpathNetworkPolicy); nil when none.
	L7 map[Key]*L7

	plain map[Key]bool // while computing: entries an L4-only rule allows
}

// Lookup returns the rules allowing a packet, or nil. ok is false when the
// direction is not enforced (the packet passes with no rule).
func (ep *EndpointPolicy) Lookup(dir Direction, peer identity.ID, proto Proto, port uint16) (rules []RuleRef, enforced bool) {
	if !ep.Enforced[dir] {
		return nil, false
	}
	for k, rs := range ep.Entries {
		if k.Matches(dir, peer, proto, port) {
			rules = append(rules, rs...)
		}
	}
	return rules, true
}

func (ep *EndpointPolicy) equal(o *EndpointPolicy) bool {
	if ep.Identity != o.Identity || ep.Enforced != o.Enforced || len(ep.Entries) != len(o.Entries) || !equalL7(ep.L7, o.L7) {
		return false
	}
	for d := range 2 {
		if strings.Join(ep.Selecting[d], ",") != strings.Join(o.Selecting[d], ",") {
			return false
		}
	}
	for k, rs := range ep.Entries {
		os, ok := o.Entries[k]
		if !ok || len(os) != len(rs) {
			return false
		}
		for i := range rs {
			if rs[i] != os[i] {
				return false
			}
		}
	}
	return true
}

// Problem is a policy (or part of one) that cannot be enforced. The pods
// it selects stay enforced in its directions, with nothing allowed by the
// part named (fail closed).
type Problem struct {
	Policy string // namespace/name
	Field  string // spec.egress[0].to[1].ipBlock.cidr
	Msg    string
}

func (p Problem) String() string { return p.Policy + ": " + p.Field + ": " + p.Msg }
