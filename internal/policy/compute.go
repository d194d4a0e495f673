package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/fastpath-net/fastpath/internal/identity"
)

// compute derives one endpoint's policy from the policies of its
// namespace that select it, and records what it depended on.
func (e *Engine) compute(st *podState) *EndpointPolicy {
	e.Stats.EndpointComputations++
	name := st.name
	e.forget(name)
	ep := &EndpointPolicy{Pod: name, Identity: st.id, Entries: map[Key][]RuleRef{}}
	var pols []*compiled
	for _, ns := range []string{name.Namespace, clusterwideNS} {
		for _, pn := range sortedKeys(e.byNS[ns]) {
			pols = append(pols, e.byNS[ns][pn])
		}
	}
	for _, c := range pols {
		if !c.selectsIn(name.Namespace, st.labels) {
			continue
		}
		for d := range Direction(2) {
			if !c.types[d] {
				continue
			}
			ep.Enforced[d] = true
			ep.Selecting[d] = append(ep.Selecting[d], c.name)
			for _, r := range c.rules[d] {
				e.addRule(ep, st, c, d, r)
			}
		}
	}
	ep.finishL7()
	return ep
}

// forget drops an endpoint's recorded dependencies before a recompute.
func (e *Engine) forget(name PodName) {
	for _, k := range e.epSelectors[name] {
		if s, ok := e.selectors[k]; ok {
			delete(s.users, name)
		}
	}
	delete(e.epSelectors, name)
	delete(e.epProblems, name)
	delete(e.ipBlockUsers, name)
	delete(e.namedUsers, name)
}

func (e *Engine) addRule(ep *EndpointPolicy, st *podState, c *compiled, d Direction, r rule) {
	if r.broken {
		return
	}
	ref := RuleRef{Policy: c.name, Path: r.path}
	peers := map[identity.ID]bool{}
	if r.allPeers {
		peers[AnyIdentity] = true
	}
	for _, p := range r.peers {
		switch {
		case p.sel != nil:
			s := e.selectors[p.sel.key]
			s.users[ep.Pod] = true
			e.epSelectors[ep.Pod] = append(e.epSelectors[ep.Pod], p.sel.key)
			for id := range s.ids {
				peers[id] = true
			}
		case p.block != nil:
			e.ipBlockUsers[ep.Pod] = append(e.ipBlockUsers[ep.Pod], p.block.cidr)
			e.blockIdentities(ep.Pod, c.name, p.field, p.block, peers)
		}
	}
	add := func(k Key, l7 *l7Spec) {
		rs := ep.Entries[k]
		if len(rs) == 0 || rs[len(rs)-1] != ref {
			ep.Entries[k] = append(rs, ref)
		}
		ep.addL7(k, l7)
	}
	if len(r.ports) == 0 {
		for id := range peers {
			add(Key{Identity: id, Dir: d, Proto: AnyProto}, nil)
		}
		return
	}
	for i, ps := range r.ports {
		if ps.name == "" {
			for id := range peers {
				add(Key{Identity: id, Dir: d, Proto: ps.proto, Port: ps.port, EndPort: ps.endPort}, ps.l7)
			}
			continue
		}
		if d == Ingress {
			// Named ports of an ingress rule are the endpoint's own ports.
			if n, ok := namedPort(st.ports, ps); ok {
				for id := range peers {
					add(Key{Identity: id, Dir: d, Proto: ps.proto, Port: n, EndPort: n}, nil)
				}
			}
			continue
		}
		// Egress: the peer's ports, per peer identity.
		e.namedUsers[ep.Pod] = true
		field := fmt.Sprintf("%s.ports[%d].port", r.path, i)
		for _, id := range e.namedTargets(peers) {
			if n, ok := e.identityPort(ep.Pod, c.name, field, id, ps); ok {
				add(Key{Identity: id, Dir: d, Proto: ps.proto, Port: n, EndPort: n}, nil)
			}
		}
	}
}

func namedPort(ports []corev1.ContainerPort, ps portSpec) (uint16, bool) {
	for _, cp := range ports {
		proto := TCP
		if cp.Protocol != "" {
			proto, _ = ParseProto(string(cp.Protocol))
		}
		if cp.Name == ps.name && proto == ps.proto {
			return uint16(cp.ContainerPort), true
		}
	}
	return 0, false
}

// namedTargets are the identities an egress named port is resolved on:
// the rule's peers, or every pod identity for a rule without peers (a
// named port exists only on pods).
func (e *Engine) namedTargets(peers map[identity.ID]bool) []identity.ID {
	if peers[AnyIdentity] {
		return sortedIDs(e.idents)
	}
	var out []identity.ID
	for _, id := range sortedIDs(peers) {
		if _, ok := e.idents[id]; ok {
			out = append(out, id)
		}
	}
	return out
}

// identityPort resolves a named port on every pod of an identity. The
// policy map keys on identity, so all of them must agree: if some pods
// lack the name or number it differently, allowing any number would open
// it on pods where it is not that port, so none is allowed (fail closed).
func (e *Engine) identityPort(ep PodName, pol, field string, id identity.ID, ps portSpec) (uint16, bool) {
	var nums = map[uint16][]string{}
	var missing []string
	for _, pn := range sortedPods(e.idents[id].pods) {
		if n, ok := namedPort(e.pods[pn].ports, ps); ok {
			nums[n] = append(nums[n], pn.String())
		} else {
			missing = append(missing, pn.String())
		}
	}
	if len(nums) == 1 && len(missing) == 0 {
		for n := range nums {
			return n, true
		}
	}
	if len(nums) > 0 {
		var parts []string
		for _, n := range sortedPorts(nums) {
			parts = append(parts, fmt.Sprintf("%d on %s", n, strings.Join(nums[n], " ")))
		}
		if len(missing) > 0 {
			parts = append(parts, "absent on "+strings.Join(missing, " "))
		}
		e.epProblems[ep] = append(e.epProblems[ep], Problem{Policy: pol, Field: field, Msg: fmt.Sprintf(
			"named port %q differs between pods of identity %d (%s); not allowed to that identity (fail closed)", ps.name, id, strings.Join(parts, ", "))})
	}
	return 0, false
}

func sortedPorts(m map[uint16][]string) []uint16 {
	out := make([]uint16, 0, len(m))
	for n := range m {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// blockIdentities adds the identities whose addresses all lie in the block:
// CIDR identities of the prefixes inside cidr but not inside an except (an
// address resolves to its longest prefix, so this is exactly the block),
// the world of cidr's family when cidr is /0, and pod identities whose
// pods' addresses are all inside. An identity with pods on both sides
// cannot be expressed by identity: it gets nothing (fail closed).
func (e *Engine) blockIdentities(ep PodName, pol, field string, b *ipBlock, out map[identity.ID]bool) {
	inBlock := func(p netip.Prefix) bool {
		if p.Addr().Is4() != b.cidr.Addr().Is4() || p.Bits() < b.cidr.Bits() || !b.cidr.Contains(p.Addr()) {
			return false
		}
		for _, x := range b.except {
			if p.Bits() >= x.Bits() && x.Contains(p.Addr()) {
				return false
			}
		}
		return true
	}
	if b.cidr.Bits() == 0 && inBlock(b.cidr) {
		if b.cidr.Addr().Is4() {
			out[identity.WorldIPv4] = true
		} else {
			out[identity.WorldIPv6] = true
		}
	}
	for p, st := range e.cidrs {
		if inBlock(p) {
			out[st.id] = true
		}
	}
	// Only identities with an address inside can be allowed or mixed:
	// found through the addresses, not by walking every pod.
	candidates := map[identity.ID]bool{}
	for a, owners := range e.ipOwners {
		if !inBlock(netip.PrefixFrom(a, a.BitLen())) {
			continue
		}
		for _, n := range owners {
			if st, ok := e.pods[n]; ok {
				if _, known := e.idents[st.id]; known {
					candidates[st.id] = true
				}
			}
		}
	}
	for _, id := range sortedIDs(candidates) {
		var in, outside []string
		for _, pn := range sortedPods(e.idents[id].pods) {
			for _, a := range e.pods[pn].ips {
				if inBlock(netip.PrefixFrom(a, a.BitLen())) {
					in = append(in, a.String())
				} else {
					outside = append(outside, a.String())
				}
			}
		}
		switch {
		case len(in) > 0 && len(outside) == 0:
			out[id] = true
		case len(in) > 0:
			e.epProblems[ep] = append(e.epProblems[ep], Problem{Policy: pol, Field: field, Msg: fmt.Sprintf(
				"identity %d has addresses inside (%v) and outside (%v) the block; not allowed (fail closed)", id, in, outside)})
		}
	}
}

// Changes recomputes the endpoints marked since the last call and returns
// those whose policy changed, those that are gone, and the ipcache delta.
func (e *Engine) Changes() ChangeSet {
	var cs ChangeSet
	names := sortedPods(e.dirty)
	clear(e.dirty)
	for _, n := range names {
		st, ok := e.pods[n]
		if !ok || !e.isEndpoint(st) {
			if _, had := e.endpoints[n]; had {
				e.forget(n)
				delete(e.endpoints, n)
				cs.Deleted = append(cs.Deleted, n)
			}
			continue
		}
		ep := e.compute(st)
		if old, ok := e.endpoints[n]; ok && old.equal(ep) {
			continue
		}
		e.endpoints[n] = ep
		cs.Upserted = append(cs.Upserted, ep)
	}
	cs.IPCache = e.ipcacheDelta()
	return cs
}

// ChangeSet is what a reconciler writes into the maps.
type ChangeSet struct {
	Upserted []*EndpointPolicy
	Deleted  []PodName
	IPCache  IPCacheDelta
}

// Endpoint returns the computed policy of a pod (after Changes).
func (e *Engine) Endpoint(n PodName) (*EndpointPolicy, bool) {
	ep, ok := e.endpoints[n]
	return ep, ok
}

// PodIdentity returns a known pod's identity and addresses.
func (e *Engine) PodIdentity(n PodName) (identity.ID, []netip.Addr, bool) {
	st, ok := e.pods[n]
	if !ok {
		return 0, nil, false
	}
	return st.id, st.ips, true
}

// Problems lists what cannot be enforced, sorted.
func (e *Engine) Problems() []Problem {
	seen := map[Problem]bool{}
	var out []Problem
	addAll := func(ps []Problem) {
		for _, p := range ps {
			if !seen[p] {
				seen[p] = true
				out = append(out, p)
			}
		}
	}
	for _, k := range sortedKeys(e.policies) {
		addAll(e.policies[k].problems)
	}
	for _, n := range sortedPods(boolSet(e.epProblems)) {
		addAll(e.epProblems[n])
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

func boolSet[V any](m map[PodName]V) map[PodName]bool {
	out := make(map[PodName]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}
