package policy

import (
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/fastpath-net/fastpath/internal/identity"
)

// Stats count the work done, so tests can prove that a change costs what
// depends on it and not the cluster.
type Stats struct {
	EndpointComputations int // endpoints recomputed
	SelectorMatches      int // (selector, identity) pairs evaluated
	PolicyCompilations   int
}

// Engine holds the cluster's namespaces, pods and policies and the desired
// policy of every endpoint. Not safe for concurrent use: one goroutine
// feeds it events and calls Changes.
type Engine struct {
	identityOf func(identity.Labels) identity.ID
	node       string

	namespaces map[string]*nsState
	pods       map[PodName]*podState
	idents     map[identity.ID]*identState
	waiting    map[string]map[PodName]bool // label set -> pods without an identity yet
	byLabels   map[string]identity.ID
	policies   map[string]*compiled
	byNS       map[string]map[string]*compiled
	selectors  map[string]*selState
	cidrs      map[netip.Prefix]*cidrState
	freeLocal  []identity.ID
	nextLocal  identity.ID

	endpoints    map[PodName]*EndpointPolicy
	epSelectors  map[PodName][]string
	epProblems   map[PodName][]Problem
	ipBlockUsers map[PodName][]netip.Prefix // endpoint -> the CIDRs of its ipBlock peers
	namedUsers   map[PodName]bool
	dirty        map[PodName]bool

	ipOwners map[netip.Addr][]PodName
	ipcache  map[netip.Prefix]identity.ID
	ipDirty  map[netip.Prefix]bool

	Stats Stats
}

type nsState struct {
	labels map[string]string
	pods   map[PodName]bool
}

type podState struct {
	name   PodName
	labels labels.Set
	ips    []netip.Addr
	ports  []corev1.ContainerPort
	node   string
	id     identity.ID
	// waitKey is the label set (canonical) of a pod whose identity is
	// not known yet; "" otherwise.
	waitKey string
}

type identState struct {
	labels        identity.Labels
	podSet, nsSet labels.Set
	pods          map[PodName]bool
}

type selState struct {
	sel   *selector
	refs  int
	ids   map[identity.ID]bool
	users map[PodName]bool
}

type cidrState struct {
	id   identity.ID
	refs int
}

// NewEngine computes endpoints for the pods of node ("" = every pod, as
// `fastpathctl policy trace` wants), numbering identities with identityOf,
// which returns identity.Unknown for a label set it cannot resolve yet.
func NewEngine(identityOf func(identity.Labels) identity.ID, node string) *Engine {
	e := &Engine{
		identityOf: identityOf, node: node,
		namespaces: map[string]*nsState{}, pods: map[PodName]*podState{},
		idents: map[identity.ID]*identState{}, waiting: map[string]map[PodName]bool{}, byLabels: map[string]identity.ID{}, policies: map[string]*compiled{},
		byNS: map[string]map[string]*compiled{}, selectors: map[string]*selState{},
		cidrs: map[netip.Prefix]*cidrState{}, nextLocal: identity.MinLocal,
		endpoints: map[PodName]*EndpointPolicy{}, epSelectors: map[PodName][]string{},
		epProblems: map[PodName][]Problem{}, ipBlockUsers: map[PodName][]netip.Prefix{},
		namedUsers: map[PodName]bool{}, dirty: map[PodName]bool{},
		ipOwners: map[netip.Addr][]PodName{}, ipcache: map[netip.Prefix]identity.ID{},
		ipDirty: map[netip.Prefix]bool{},
	}
	e.setIPCache(netip.MustParsePrefix("0.0.0.0/0"), identity.WorldIPv4)
	e.setIPCache(netip.MustParsePrefix("::/0"), identity.WorldIPv6)
	return e
}

// UpsertNamespace records a namespace; a label change re-identifies its pods.
func (e *Engine) UpsertNamespace(ns *corev1.Namespace) {
	st := e.ns(ns.Name)
	if labels.Equals(st.labels, ns.Labels) {
		return
	}
	st.labels = ns.Labels
	for _, name := range sortedPods(st.pods) {
		e.reidentify(e.pods[name])
	}
}

// DeleteNamespace forgets a namespace's labels (its pods go by their own
// deletions).
func (e *Engine) DeleteNamespace(name string) {
	if st, ok := e.namespaces[name]; ok {
		st.labels = nil
		for _, n := range sortedPods(st.pods) {
			e.reidentify(e.pods[n])
		}
	}
}

func (e *Engine) ns(name string) *nsState {
	st, ok := e.namespaces[name]
	if !ok {
		st = &nsState{pods: map[PodName]bool{}}
		e.namespaces[name] = st
	}
	return st
}

// UpsertPod records a pod. Host-network and finished pods are no endpoints
// and have no identity of their own.
func (e *Engine) UpsertPod(p *corev1.Pod) {
	name := PodName{p.Namespace, p.Name}
	if p.Spec.HostNetwork || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		e.DeletePod(name)
		return
	}
	st := &podState{name: name, labels: labels.Set(p.Labels), node: p.Spec.NodeName}
	for _, ip := range p.Status.PodIPs {
		if a, err := netip.ParseAddr(ip.IP); err == nil {
			st.ips = append(st.ips, a.Unmap())
		}
	}
	if len(st.ips) == 0 && p.Status.PodIP != "" {
		if a, err := netip.ParseAddr(p.Status.PodIP); err == nil {
			st.ips = append(st.ips, a.Unmap())
		}
	}
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name != "" {
				st.ports = append(st.ports, cp)
			}
		}
	}
	old := e.pods[name]
	if old != nil && labels.Equals(old.labels, st.labels) && slices.Equal(old.ips, st.ips) &&
		slices.Equal(old.ports, st.ports) && old.node == st.node {
		return // status noise: nothing policy depends on changed
	}
	e.ns(name.Namespace).pods[name] = true
	e.pods[name] = st
	e.attach(st)
	if old != nil && (old.id != st.id || old.waitKey != st.waitKey) {
		e.detach(old)
	}
	e.podChanged(old, st)
}

// DeletePod forgets a pod.
func (e *Engine) DeletePod(name PodName) {
	old, ok := e.pods[name]
	if !ok {
		return
	}
	delete(e.pods, name)
	delete(e.namespaces[name.Namespace].pods, name)
	e.detach(old)
	e.podChanged(old, nil)
}

// reidentify recomputes a pod's identity after its namespace's labels
// changed or its identity became known.
func (e *Engine) reidentify(st *podState) {
	old := *st
	e.attach(st)
	if old.id != st.id || old.waitKey != st.waitKey {
		e.detach(&old)
	}
	if old.id != st.id {
		e.podChanged(&old, st)
	}
}

// LabelsInUse reports whether a pod of the cluster has label set l, known
// or still waiting for its number: identity.GC's InUse. Call it on the
// Engine's goroutine.
func (e *Engine) LabelsInUse(l identity.Labels) bool {
	k := l.String()
	if len(e.waiting[k]) > 0 {
		return true
	}
	id, ok := e.byLabels[k]
	return ok && len(e.idents[id].pods) > 0
}

// IdentityKnown tells the Engine that the identity of label set l can now
// be resolved (its FastpathIdentity appeared): the pods waiting for it
// join it.
func (e *Engine) IdentityKnown(l identity.Labels) {
	for _, n := range sortedPods(e.waiting[l.String()]) {
		e.reidentify(e.pods[n])
	}
}

// PodIdentityLabels returns the label set a known pod's identity is
// allocated for (pod labels and its namespace's labels, as the Engine
// holds them).
func (e *Engine) PodIdentityLabels(name PodName) (identity.Labels, bool) {
	if _, ok := e.pods[name]; !ok {
		return nil, false
	}
	return e.podLabels(name), true
}

func (e *Engine) podLabels(name PodName) identity.Labels {
	st := e.pods[name]
	return identity.ForPod(name.Namespace, e.ns(name.Namespace).labels, st.labels)
}

// attach adds a pod to the identity of its labels, creating the identity
// (and matching it against every selector) when it is new. A label set
// identityOf cannot resolve yet (Unknown: allocated on another node, its
// object not seen yet) leaves the pod waiting: in no selector and not in
// the ipcache, so its traffic is judged as its address's CIDR or the
// world (fail closed) until IdentityKnown.
func (e *Engine) attach(st *podState) {
	name := st.name
	l := e.podLabels(name)
	id := e.identityOf(l)
	st.id, st.waitKey = id, ""
	if id == identity.Unknown {
		st.waitKey = l.String()
		if e.waiting[st.waitKey] == nil {
			e.waiting[st.waitKey] = map[PodName]bool{}
		}
		e.waiting[st.waitKey][name] = true
		return
	}
	is, ok := e.idents[id]
	if !ok {
		is = &identState{labels: l, pods: map[PodName]bool{}, podSet: labels.Set{}, nsSet: labels.Set{}}
		for k, v := range l {
			if k == identity.NamespaceKey {
				continue
			}
			if nk, ok := strings.CutPrefix(k, identity.NamespaceLabelKey); ok {
				is.nsSet[nk] = v
			} else if pk, ok := strings.CutPrefix(k, identity.SourcePrefix); ok {
				is.podSet[pk] = v
			}
		}
		e.idents[id] = is
		e.byLabels[l.String()] = id
		for _, key := range sortedKeys(e.selectors) {
			e.matchSelector(e.selectors[key], id, is)
		}
	}
	is.pods[name] = true
}

// detach takes a pod (as it was) out of its identity or its wait.
func (e *Engine) detach(old *podState) {
	name, id := old.name, old.id
	if old.waitKey != "" {
		if w := e.waiting[old.waitKey]; w != nil {
			delete(w, name)
			if len(w) == 0 {
				delete(e.waiting, old.waitKey)
			}
		}
		return
	}
	is, ok := e.idents[id]
	if !ok {
		return
	}
	delete(is.pods, name)
	if len(is.pods) > 0 {
		return
	}
	delete(e.idents, id)
	delete(e.byLabels, is.labels.String())
	for _, s := range e.selectors {
		if s.ids[id] {
			delete(s.ids, id)
			e.markAll(s.users)
		}
	}
}

func (e *Engine) matchSelector(s *selState, id identity.ID, is *identState) {
	e.Stats.SelectorMatches++
	if s.sel.matches(is.labels, is.podSet, is.nsSet) {
		s.ids[id] = true
		e.markAll(s.users)
	}
}

// podChanged marks what depends on a pod: the pod itself, endpoints whose
// ipBlocks or egress named ports look at pods' addresses and ports, and
// the ipcache. Selector users were marked by attach/detach.
func (e *Engine) podChanged(old, cur *podState) {
	var name PodName
	if cur != nil {
		name = cur.name
	} else {
		name = old.name
	}
	if cur != nil && e.isEndpoint(cur) {
		e.dirty[name] = true
	} else if _, ok := e.endpoints[name]; ok {
		e.dirty[name] = true
	}
	var oldIPs, newIPs []netip.Addr
	var oldID, newID identity.ID
	var oldPorts, newPorts []corev1.ContainerPort
	if old != nil {
		oldIPs, oldID, oldPorts = old.ips, old.id, old.ports
	}
	if cur != nil {
		newIPs, newID, newPorts = cur.ips, cur.id, cur.ports
	}
	if oldID != newID || !slices.Equal(oldIPs, newIPs) {
		e.markBlockUsers(old, cur)
	}
	if (len(oldPorts) > 0 || len(newPorts) > 0) && (oldID != newID || !slices.Equal(oldPorts, newPorts)) {
		e.markAll(e.namedUsers)
	}
	for _, a := range oldIPs {
		e.ipOwners[a] = slices.DeleteFunc(e.ipOwners[a], func(n PodName) bool { return n == name })
		e.refreshIP(a)
	}
	for _, a := range newIPs {
		if !slices.Contains(e.ipOwners[a], name) {
			e.ipOwners[a] = append(e.ipOwners[a], name)
		}
		e.refreshIP(a)
	}
}

// markBlockUsers marks the endpoints whose ipBlocks may judge the pod's
// old or new identity differently now. A block allows an identity when
// all the identity's addresses are inside, so a block that holds none of
// the addresses of the identities involved, before or after, is not
// concerned (marking every ipBlock user on every pod change made a bulk
// of pod events cost O(events x ipBlock users x cluster)).
func (e *Engine) markBlockUsers(old, cur *podState) {
	var addrs []netip.Addr
	for _, st := range []*podState{old, cur} {
		if st == nil {
			continue
		}
		addrs = append(addrs, st.ips...)
		if is, ok := e.idents[st.id]; ok {
			for n := range is.pods {
				addrs = append(addrs, e.pods[n].ips...)
			}
		}
	}
	for n, cidrs := range e.ipBlockUsers {
		for _, c := range cidrs {
			if slices.ContainsFunc(addrs, c.Contains) {
				e.dirty[n] = true
				break
			}
		}
	}
}

func (e *Engine) markAllBlockUsers() {
	for n := range e.ipBlockUsers {
		e.dirty[n] = true
	}
}

func (e *Engine) isEndpoint(st *podState) bool { return e.node == "" || st.node == e.node }

func (e *Engine) markAll(set map[PodName]bool) {
	for n := range set {
		e.dirty[n] = true
	}
}

// UpsertPolicy records a NetworkPolicy and marks the endpoints it selected
// before or selects now.
func (e *Engine) UpsertPolicy(np *networkingv1.NetworkPolicy) {
	e.upsert(compile(np), np.Name)
}

// upsert records a compiled policy under byNS[c.ns][short].
func (e *Engine) upsert(c *compiled, short string) {
	e.Stats.PolicyCompilations++
	key := c.name
	old := e.policies[key]
	e.policies[key] = c
	if e.byNS[c.ns] == nil {
		e.byNS[c.ns] = map[string]*compiled{}
	}
	e.byNS[c.ns][short] = c
	e.register(c, 1)
	if old != nil {
		e.markSelected(old)
		e.register(old, -1)
	}
	e.markSelected(c)
}

// DeletePolicy forgets a NetworkPolicy.
func (e *Engine) DeletePolicy(ns, name string) {
	e.remove(ns+"/"+name, ns, name)
}

func (e *Engine) remove(key, ns, short string) {
	old, ok := e.policies[key]
	if !ok {
		return
	}
	delete(e.policies, key)
	delete(e.byNS[ns], short)
	e.markSelected(old)
	e.register(old, -1)
}

func (e *Engine) markSelected(c *compiled) {
	if c.fastpath && c.ns == clusterwideNS {
		for n, st := range e.pods {
			if c.selectsIn(n.Namespace, st.labels) {
				e.dirty[n] = true
			}
		}
		return
	}
	for n := range e.namespaces[c.ns].podsOrNil() {
		if c.selectsIn(c.ns, e.pods[n].labels) {
			e.dirty[n] = true
		}
	}
}

func (st *nsState) podsOrNil() map[PodName]bool {
	if st == nil {
		return nil
	}
	return st.pods
}

// register takes references on the policy's selectors and CIDRs (delta
// 1), or drops them (delta -1).
func (e *Engine) register(c *compiled, delta int) {
	for d := range 2 {
		for _, r := range c.rules[d] {
			for _, p := range r.peers {
				switch {
				case p.sel != nil:
					e.refSelector(p.sel, delta)
				case p.block != nil:
					e.refCIDR(p.block.cidr, delta)
					for _, x := range p.block.except {
						e.refCIDR(x, delta)
					}
				}
			}
		}
	}
}

// refSelector counts references to a selector; a new one is matched
// against every identity once, and keeps its set current from then on.
func (e *Engine) refSelector(sel *selector, delta int) {
	s, ok := e.selectors[sel.key]
	if !ok {
		s = &selState{sel: sel, ids: map[identity.ID]bool{}, users: map[PodName]bool{}}
		e.selectors[sel.key] = s
		for _, id := range sortedIDs(e.idents) {
			e.matchSelector(s, id, e.idents[id])
		}
	}
	if s.refs += delta; s.refs <= 0 {
		delete(e.selectors, sel.key)
	}
}

// refCIDR counts references to a prefix; a prefix gets a node-local CIDR
// identity while referenced. /0 is the world identity and needs none. A
// change of the set of prefixes changes what every ipBlock allows.
func (e *Engine) refCIDR(p netip.Prefix, delta int) {
	if p.Bits() == 0 {
		return
	}
	st, ok := e.cidrs[p]
	switch {
	case !ok && delta > 0:
		st = &cidrState{id: e.allocLocal()}
		e.cidrs[p] = st
		e.markAllBlockUsers()
		e.refreshPrefix(p)
	case !ok:
		return
	}
	st.refs += delta
	if st.refs <= 0 {
		delete(e.cidrs, p)
		e.freeLocal = append(e.freeLocal, st.id)
		e.markAllBlockUsers()
		e.refreshPrefix(p)
	}
}

func (e *Engine) allocLocal() identity.ID {
	if n := len(e.freeLocal); n > 0 {
		slices.Sort(e.freeLocal)
		id := e.freeLocal[0]
		e.freeLocal = e.freeLocal[1:]
		return id
	}
	e.nextLocal++
	return e.nextLocal - 1
}

func sortedPods(m map[PodName]bool) []PodName {
	out := make([]PodName, 0, len(m))
	for n := range m {
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

func sortedIDs[V any](m map[identity.ID]V) []identity.ID { return slices.Sorted(maps.Keys(m)) }

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
