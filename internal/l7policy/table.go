// Package l7policy gives the L7 proxy (internal/l7proxy) the rules of this
// node's endpoints: Table implements l7proxy.Policy from what the policy
// Engine computed (policy.EndpointPolicy.L7), kept current with the same
// change sets the policy maps get. Rule sets are compiled when an
// endpoint's policy changes, never per request; Lookup runs per request
// (so rule updates reach requests on open connections) under a read lock.
package l7policy

import (
	"net/netip"
	"sync"

	"github.com/fastpath-net/fastpath/internal/identity"
	"github.com/fastpath-net/fastpath/internal/l7"
	"github.com/fastpath-net/fastpath/internal/l7proxy"
	"github.com/fastpath-net/fastpath/internal/policy"
)

// Names of the synthetic rules.
const (
	RuleL4Allowed = "(no HTTP rules: allowed at L4)"
	RuleL4Denied  = "(not allowed at L4)"
)

var (
	allowAll = mustCompile(l7.RuleSet{Allow: []l7.NamedRule{{Name: RuleL4Allowed}}})
	denyAll  = mustCompile(l7.RuleSet{})
)

func mustCompile(rs l7.RuleSet) *l7.Compiled {
	c, err := l7.Compile(rs)
	if err != nil {
		panic(err)
	}
	return c
}

// Table is the proxy's view of this node's endpoints. Safe for concurrent
// use: Apply from the policy worker, Lookup from the proxy.
type Table struct {
	mu      sync.RWMutex
	byAddr  map[netip.Addr]*endpoint
	byPod   map[policy.PodName]*endpoint
	ipcache map[netip.Prefix]identity.ID
	bits    map[int]int // prefix length -> how many ipcache prefixes have it
	// OnError is told about a rule set the matcher refused (the Engine
	// checks rules first, so this means a gap between the two); the entry
	// then denies every request.
	OnError func(pod policy.PodName, k policy.Key, err error)
	// Backend gives the backend the Service load balancer chose for a flow
	// to a frontend (the proxy sees the frontend as destination); nil or
	// ok false: Dst itself. The server's ingress is that backend's.
	Backend func(f l7proxy.Flow) (netip.AddrPort, bool)
}

type endpoint struct {
	name  string
	addrs []netip.Addr
	pol   *policy.EndpointPolicy
	rules map[policy.Key]*l7.Compiled
}

// New returns an empty Table.
func New() *Table {
	return &Table{byAddr: map[netip.Addr]*endpoint{}, byPod: map[policy.PodName]*endpoint{}, ipcache: map[netip.Prefix]identity.ID{}, bits: map[int]int{}}
}

// Apply takes one change set of the Engine; addrs gives an upserted pod's
// addresses.
func (t *Table) Apply(cs policy.ChangeSet, addrs func(policy.PodName) []netip.Addr) {
	eps := make([]*endpoint, 0, len(cs.Upserted))
	for _, ep := range cs.Upserted {
		eps = append(eps, t.compile(ep, addrs(ep.Pod)))
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, n := range cs.Deleted {
		t.drop(n)
	}
	for _, e := range eps {
		t.drop(e.pol.Pod)
		t.byPod[e.pol.Pod] = e
		for _, a := range e.addrs {
			t.byAddr[a] = e
		}
	}
	t.setIPCache(cs.IPCache)
}

// SetIPCache applies ipcache writes that do not come from the Engine (the
// node addresses).
func (t *Table) SetIPCache(d policy.IPCacheDelta) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.setIPCache(d)
}

func (t *Table) setIPCache(d policy.IPCacheDelta) {
	for _, p := range d.Delete {
		if _, ok := t.ipcache[p]; ok {
			delete(t.ipcache, p)
			t.bits[p.Bits()]--
		}
	}
	for p, id := range d.Upsert {
		if _, ok := t.ipcache[p]; !ok {
			t.bits[p.Bits()]++
		}
		t.ipcache[p] = id
	}
}

func (t *Table) drop(n policy.PodName) {
	e, ok := t.byPod[n]
	if !ok {
		return
	}
	delete(t.byPod, n)
	for _, a := range e.addrs {
		if t.byAddr[a] == e {
			delete(t.byAddr, a)
		}
	}
}

func (t *Table) compile(ep *policy.EndpointPolicy, addrs []netip.Addr) *endpoint {
	e := &endpoint{name: ep.Pod.String(), addrs: addrs, pol: ep, rules: map[policy.Key]*l7.Compiled{}}
	for k, l := range ep.L7 {
		c, err := l7.Compile(RuleSet(l))
		if err != nil {
			if t.OnError != nil {
				t.OnError(ep.Pod, k, err)
			}
			c = denyAll
		}
		e.rules[k] = c
	}
	return e
}

// RuleSet converts an entry's HTTP rules for the matcher; rules are named
// "<policy> <path>", as events report them.
func RuleSet(l *policy.L7) l7.RuleSet {
	var rs l7.RuleSet
	if l.AllowAll {
		rs.Allow = []l7.NamedRule{{Name: RuleL4Allowed}}
	}
	for _, r := range l.Allow {
		rs.Allow = append(rs.Allow, l7.NamedRule{Name: r.Ref.String(), Rule: r.Rule.L7()})
	}
	for _, r := range l.Deny {
		rs.Deny = append(rs.Deny, l7.NamedRule{Name: r.Ref.String(), Rule: r.Rule.L7()})
	}
	return rs
}

// Lookup implements l7proxy.Policy: the rule sets of the client's egress
// (when it is a pod of this node with egress enforced) and of the server's
// ingress (likewise), the server being the backend of a Service flow. Each end's set is its entry's HTTP rules, else all
// or nothing as its L4 policy now says: the proxy's upstream leg passes
// the server's veth unjudged, so its L4 ingress is checked here. A flow
// neither end has anything to say about is allowed (it was redirected
// under rules since removed).
func (t *Table) Lookup(f l7proxy.Flow) []l7proxy.Applied {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var out []l7proxy.Applied
	dst := f.Dst
	if t.Backend != nil {
		if b, ok := t.Backend(f); ok {
			dst = b
		}
	}
	if e := t.byAddr[f.Src.Addr().Unmap()]; e != nil && e.pol.Enforced[policy.Egress] {
		out = append(out, l7proxy.Applied{Direction: l7proxy.Egress, Endpoint: e.name,
			Rules: e.judge(policy.Egress, t.identity(dst.Addr().Unmap()), dst.Port())})
	}
	if e := t.byAddr[dst.Addr().Unmap()]; e != nil && e.pol.Enforced[policy.Ingress] {
		out = append(out, l7proxy.Applied{Direction: l7proxy.Ingress, Endpoint: e.name,
			Rules: e.judge(policy.Ingress, t.identity(f.Src.Addr().Unmap()), dst.Port())})
	}
	if len(out) == 0 {
		out = append(out, l7proxy.Applied{Direction: l7proxy.Ingress, Rules: allowAll})
	}
	return out
}

// judge finds what the datapath's lookup finds for a TCP flow to port
// from/to peer: the exact identity's entries first, then any identity's.
func (e *endpoint) judge(dir policy.Direction, peer identity.ID, port uint16) *l7.Compiled {
	for _, id := range []identity.ID{peer, policy.AnyIdentity} {
		k := policy.Key{Identity: id, Dir: dir, Proto: policy.TCP, Port: port, EndPort: port}
		if c, ok := e.rules[k]; ok {
			return c
		}
		for k := range e.pol.Entries {
			if k.Identity == id && k.Matches(dir, peer, policy.TCP, port) {
				return allowAll
			}
		}
	}
	return denyAll
}

// identity resolves an address as fp_ipcache does: longest prefix.
func (t *Table) identity(a netip.Addr) identity.ID {
	for bits := a.BitLen(); bits >= 0; bits-- {
		if t.bits[bits] == 0 {
			continue
		}
		p, _ := a.Prefix(bits)
		if id, ok := t.ipcache[p]; ok {
			return id
		}
	}
	if a.Is4() {
		return identity.WorldIPv4
	}
	return identity.WorldIPv6
}
