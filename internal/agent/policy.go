package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/fastpath-net/fastpath/internal/datapath"
	"github.com/fastpath-net/fastpath/internal/datapath/policymap"
	"github.com/fastpath-net/fastpath/internal/endpoint"
	"github.com/fastpath-net/fastpath/internal/identity"
	"github.com/fastpath-net/fastpath/internal/k8s"
	"github.com/fastpath-net/fastpath/internal/l7policy"
	"github.com/fastpath-net/fastpath/internal/metrics"
	"github.com/fastpath-net/fastpath/internal/podnet"
	"github.com/fastpath-net/fastpath/internal/policy"
)

// Identity GC and allocator timing (docs/policy-datapath.md, agent wiring).
const (
	identityGCInterval = time.Minute
	identityGCGrace    = 5 * time.Minute
	identityTouchAfter = 2 * time.Minute
	identityQPS        = 50
	identityBurst      = 100
)

// policyCtl enforces NetworkPolicy on this node: informers of Namespaces,
// Pods (all nodes: selectors and the ipcache need remote pods),
// NetworkPolicies, Nodes and FastpathIdentities feed a policy.Engine; a
// worker writes its changes with policymap.Reconciler. The Engine is not
// safe for concurrent use: every access holds mu.
type policyCtl struct {
	log     *slog.Logger
	metrics *metrics.Metrics // nil without --metrics-addr
	node    string
	netns   string
	dp      *datapath.Datapath
	alloc   *identity.Allocator
	gc      *identity.GC
	maps    policymap.Maps

	mu     sync.Mutex
	engine *policy.Engine
	rec    *policymap.Reconciler
	eps    *endpoint.Store              // nil without the CNI
	local  map[policy.PodName]bool      // this node's pods
	ids    map[string][]identity.ID     // label set -> live identities, lowest first
	nodeIP map[netip.Prefix]identity.ID // node addresses: host / remote-node
	nodes  map[string][]netip.Prefix
	// nodeDirty are node-address prefixes to write again: changed, or
	// just written by the Engine's delta (a node address wins over a CIDR
	// identity of the same prefix).
	nodeDirty map[netip.Prefix]bool
	// allocating holds label sets whose allocation is under way.
	allocating map[string]bool
	synced     bool // the informers delivered their first state
	events     record.EventRecorder
	reported   map[policy.Problem]bool // problems logged and sent as Events
	l7         *l7policy.Table         // the L7 proxy's rules; nil without it (l7.go)

	kick chan struct{}
	// programmed is closed once the informers' first state is written
	// (maps and the L7 table): the proxy serves only then (l7.go).
	programmed chan struct{}
	// podsByIP indexes the Pod informer by pod IP, for naming the peers
	// of flow events (flows.go); nil until the informer is built.
	podsByIP cache.Indexer
}

// newPolicyCtl builds the controller; nothing runs before run.
func newPolicyCtl(cfg Config, dp *datapath.Datapath) (*policyCtl, error) {
	if dp.Policy() == nil {
		return nil, fmt.Errorf("policy: the datapath was loaded without tc_policy")
	}
	rc, err := k8s.RESTConfig(cfg.Kubernetes.Kubeconfig)
	if err != nil {
		return nil, err
	}
	// FastpathIdentities are a CRD: no protobuf.
	dynCfg := rest.CopyConfig(rc)
	dynCfg.ContentType, dynCfg.AcceptContentTypes = "application/json", "application/json"
	// client-go's default of 5 requests/s made a namespace relabel (one
	// new label set per app in it, three requests each) take seconds to
	// reach the datapath (docs/benchmarks/policy.md). An agent allocates
	// only its own pods' label sets: kubelet's limits are safe here.
	dynCfg.QPS, dynCfg.Burst = identityQPS, identityBurst
	dyn, err := dynamic.NewForConfig(dynCfg)
	if err != nil {
		return nil, err
	}
	c := &policyCtl{
		log: cfg.Log.With("component", "policy"), node: cfg.Kubernetes.NodeName, netns: cfg.NetNS, dp: dp,
		alloc: &identity.Allocator{Client: dyn, TouchAfter: identityTouchAfter},
		maps:  dp.Policy().Maps(),
		ids:   map[string][]identity.ID{}, nodeIP: map[netip.Prefix]identity.ID{}, nodes: map[string][]netip.Prefix{},
		nodeDirty:  map[netip.Prefix]bool{},
		allocating: map[string]bool{}, kick: make(chan struct{}, 1), local: map[policy.PodName]bool{},
		programmed: make(chan struct{}),
	}
	c.engine = policy.NewEngine(c.identityOf, c.node)
	c.gc = &identity.GC{Client: dyn, Grace: identityGCGrace, InUse: c.labelsInUse}
	c.rec = policymap.NewReconciler(c.maps, c.attachment)
	// Adopt what a previous agent wrote: the first Apply writes only
	// differences, and until the informers have synced the pinned state
	// keeps enforcing.
	if err := c.rec.Restore(); err != nil {
		return nil, fmt.Errorf("policy: restore from pinned maps: %w", err)
	}
	// fp_policy_config (records' sampling and budget): startFlows.
	return c, nil
}

// run starts the informers and the worker; it returns when ctx ends.
func (c *policyCtl) run(ctx context.Context, client kubernetes.Interface) {
	events, stopEvents := k8s.APIRecorder(client, c.node)
	defer stopEvents()
	c.mu.Lock()
	c.events = events
	c.mu.Unlock()
	f := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTransform(k8s.StripManagedFields))
	nsInf := f.Core().V1().Namespaces()
	dynF := dynamicinformer.NewDynamicSharedInformerFactory(c.alloc.Client, 0)
	regs := []struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandlerFuncs
	}{
		{nsInf.Informer(), handlers(c, c.onNamespace, func(o *corev1.Namespace) { c.engine.DeleteNamespace(o.Name) })},
		{c.indexPodIPs(f.Core().V1().Pods().Informer()), handlers(c, c.onPod, c.onPodDeleted)},
		{f.Networking().V1().NetworkPolicies().Informer(), handlers(c, c.engine.UpsertPolicy, func(o *networkingv1.NetworkPolicy) {
			c.engine.DeletePolicy(o.Namespace, o.Name)
		})},
		{f.Core().V1().Nodes().Informer(), handlers(c, c.onNode, func(o *corev1.Node) { c.setNode(o.Name, nil) })},
		{dynF.ForResource(identity.GVR).Informer(), handlers(c, c.onIdentity, c.onIdentityDeleted)},
	}
	synced := c.watchFastpathPolicies(ctx, client, dynF)
	for _, r := range regs {
		reg, err := r.inf.AddEventHandler(r.h)
		if err != nil {
			c.log.Error("policy: informer handler", "error", err)
			return
		}
		synced = append(synced, reg.HasSynced)
	}
	f.Start(ctx.Done())
	dynF.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return
	}
	c.mu.Lock()
	c.synced = true
	c.mu.Unlock()
	c.log.Info("policy: informers synced; enforcing")
	go c.collectIdentities(ctx)
	c.worker(ctx)
}

// handlers makes event handlers of typed upsert and delete funcs, called
// with c.mu held; each wakes the worker.
func handlers[T any](c *policyCtl, upsert func(T), del func(T)) cache.ResourceEventHandlerFuncs {
	call := func(o any, fn func(T)) {
		v, ok := o.(T)
		if !ok {
			return
		}
		c.mu.Lock()
		fn(v)
		c.mu.Unlock()
		c.poke()
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { call(o, upsert) },
		UpdateFunc: func(_, o any) { call(o, upsert) },
		DeleteFunc: func(o any) {
			if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = t.Obj
			}
			call(o, del)
		},
	}
}

func (c *policyCtl) poke() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// identityOf resolves a label set from the FastpathIdentity informer's
// state (the lowest live number); Unknown until it has one.
func (c *policyCtl) identityOf(l identity.Labels) identity.ID {
	if ids := c.ids[l.String()]; len(ids) > 0 {
		return ids[0]
	}
	return identity.Unknown
}

func (c *policyCtl) labelsInUse(l identity.Labels) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.engine.LabelsInUse(l)
}

func (c *policyCtl) onNamespace(ns *corev1.Namespace) {
	c.engine.UpsertNamespace(ns)
	// New namespace labels are new label sets for its local pods.
	for n := range c.local {
		if n.Namespace == ns.Name {
			c.ensurePodIdentity(n)
		}
	}
}

// onPod: this node's pods get their identity allocated here; the others'
// come from their nodes' agents through the FastpathIdentity informer.
func (c *policyCtl) onPod(p *corev1.Pod) {
	c.engine.UpsertPod(p)
	n := policy.PodName{Namespace: p.Namespace, Name: p.Name}
	if p.Spec.NodeName != c.node || p.Spec.HostNetwork {
		delete(c.local, n)
		return
	}
	c.local[n] = true
	c.ensurePodIdentity(n)
}

// ensurePodIdentity allocates for the label set the Engine resolves the
// pod with (its namespace's labels as the Engine holds them, so a Pod seen
// before its Namespace is allocated again once the Namespace arrives).
func (c *policyCtl) ensurePodIdentity(n policy.PodName) {
	if l, ok := c.engine.PodIdentityLabels(n); ok {
		c.ensureIdentity(l)
	}
}

func (c *policyCtl) onPodDeleted(p *corev1.Pod) {
	n := policy.PodName{Namespace: p.Namespace, Name: p.Name}
	c.engine.DeletePod(n)
	delete(c.local, n)
}

// ensureIdentity allocates the identity of a local pod's label set in the
// background when none is known; the FastpathIdentity informer then tells
// the Engine (IdentityKnown). Until then the pod is fail-closed: in no
// selector, judged as world by others.
func (c *policyCtl) ensureIdentity(l identity.Labels) {
	k := l.String()
	if len(c.ids[k]) > 0 || c.allocating[k] {
		return
	}
	c.allocating[k] = true
	go func() {
		for wait := 100 * time.Millisecond; ; wait = min(2*wait, 10*time.Second) {
			id, err := c.alloc.Allocate(context.Background(), l)
			if err == nil {
				c.log.Debug("policy: identity allocated", "identity", uint32(id), "labels", k)
				break
			}
			c.log.Error("policy: cannot allocate an identity; the pod stays fail-closed", "labels", k, "error", err)
			time.Sleep(wait)
		}
		c.mu.Lock()
		delete(c.allocating, k)
		c.mu.Unlock()
	}()
}

func (c *policyCtl) onIdentity(u *unstructured.Unstructured) {
	o, err := identity.ParseObject(u)
	if err != nil {
		c.log.Warn("policy: ignoring a malformed FastpathIdentity", "name", u.GetName(), "error", err)
		return
	}
	c.onIdentityObject(o)
}

func (c *policyCtl) onIdentityObject(o identity.Object) {
	if o.Deleting {
		c.dropIdentity(o)
		return
	}
	k := o.Labels.String()
	if slices.Contains(c.ids[k], o.ID) {
		return
	}
	c.ids[k] = append(c.ids[k], o.ID)
	slices.Sort(c.ids[k])
	c.engine.IdentityKnown(o.Labels)
}

func (c *policyCtl) onIdentityDeleted(u *unstructured.Unstructured) {
	if o, err := identity.ParseObject(u); err == nil {
		c.dropIdentity(o)
	}
}

// dropIdentity forgets a deleted number. Pods already identified keep it
// in the Engine (the datapath keeps working); a local label set still in
// use is allocated again.
func (c *policyCtl) dropIdentity(o identity.Object) {
	k := o.Labels.String()
	c.ids[k] = slices.DeleteFunc(c.ids[k], func(id identity.ID) bool { return id == o.ID })
	if len(c.ids[k]) == 0 {
		delete(c.ids, k)
		if c.engine.LabelsInUse(o.Labels) {
			c.ensureIdentity(o.Labels)
		}
	}
}

// onNode records a node's InternalIP/ExternalIP addresses: this node's as
// host, the others' as remote-node.
func (c *policyCtl) onNode(n *corev1.Node) {
	var ps []netip.Prefix
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP && a.Type != corev1.NodeExternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil {
			ps = append(ps, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()))
		}
	}
	c.setNode(n.Name, ps)
}

func (c *policyCtl) setNode(name string, ps []netip.Prefix) {
	id := identity.RemoteNode
	if name == c.node {
		id = identity.Host
	}
	for _, p := range c.nodes[name] {
		delete(c.nodeIP, p)
		c.nodeDirty[p] = true
	}
	for _, p := range ps {
		c.nodeIP[p] = id
		c.nodeDirty[p] = true
	}
	if ps == nil {
		delete(c.nodes, name)
	} else {
		c.nodes[name] = ps
	}
}

// worker writes the Engine's changes whenever something changed; failed
// writes are retried (the Reconciler keeps what it wrote).
func (c *policyCtl) worker(ctx context.Context) {
	first := true
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	for {
		c.mu.Lock()
		err := c.sync(first)
		c.mu.Unlock()
		if err != nil {
			c.log.Error("policy: writing the policy maps failed; will retry", "error", err)
			retry.Reset(time.Second)
		} else if first {
			// Benchmarks (test/bench/policy) time the full computation to
			// this line.
			c.log.Info(MsgPolicyProgrammed)
			close(c.programmed)
			first = false
		}
		select {
		case <-ctx.Done():
			return
		case <-c.kick:
		case <-retry.C:
		}
	}
}

// MsgPolicyProgrammed is logged once the informers' first state is in
// the policy maps.
const MsgPolicyProgrammed = "policy: maps programmed from the informers' first state"

// sync writes the Engine's changes. The first time it also removes what a
// previous agent wrote and nothing claims any more.
func (c *policyCtl) sync(first bool) error {
	start := time.Now()
	cs := c.engine.Changes()
	c.metrics.ObservePolicy(metrics.PolicyCompute, time.Since(start))
	if len(cs.Upserted) > 0 || len(cs.Deleted) > 0 {
		c.reportProblems()
	}
	start = time.Now()
	defer func() { c.metrics.ObservePolicy(metrics.PolicyWrite, time.Since(start)) }()
	if err := c.rec.Apply(cs); err != nil {
		return err
	}
	if c.l7 != nil {
		c.l7.Apply(cs, c.l7Addrs)
	}
	if !first {
		return c.syncNodeIPs(cs.IPCache)
	}
	// Adopt what a previous agent pinned: the whole ipcache made equal to
	// the Engine's plus the node addresses, endpoints nobody claims removed.
	want := c.engine.IPCache()
	for p, id := range c.nodeIP {
		want[p] = id
	}
	if err := c.rec.SyncIPCache(want); err != nil {
		return err
	}
	if c.l7 != nil {
		c.l7.SetIPCache(policy.IPCacheDelta{Upsert: want})
	}
	clear(c.nodeDirty)
	return c.rec.Prune(c.liveEndpoint)
}

// ReasonPolicyNotEnforceable is the reason of the Warning Event on a
// NetworkPolicy the Engine cannot enforce as written.
const ReasonPolicyNotEnforceable = "PolicyNotEnforceable"

// reportProblems logs each problem of the Engine and sends a Warning Event
// on its NetworkPolicy, once while it lasts. The pods it selects stay
// fail-closed (the Engine allows nothing by the part it cannot enforce).
func (c *policyCtl) reportProblems() {
	now := map[policy.Problem]bool{}
	for _, p := range c.engine.Problems() {
		now[p] = true
		if c.reported[p] {
			continue
		}
		c.log.Warn("policy: a NetworkPolicy cannot be enforced as written; what it selects stays fail-closed",
			"policy", p.Policy, "field", p.Field, "problem", p.Msg)
		if c.events != nil {
			kind, apiVersion, ns, name := problemObject(p)
			ref := corev1.ObjectReference{Kind: kind, APIVersion: apiVersion, Namespace: ns, Name: name}
			c.events.Eventf(&ref, corev1.EventTypeWarning, ReasonPolicyNotEnforceable, "%s: %s", p.Field, p.Msg)
		}
	}
	c.reported = now
}

// syncNodeIPs writes the node-address entries that changed or that the
// Engine's delta d touched: O(changes). A removed node's address gets the
// Engine's entry back, if it has one (then the whole Engine table is read:
// rare).
func (c *policyCtl) syncNodeIPs(d policy.IPCacheDelta) error {
	for p := range d.Upsert {
		if _, ok := c.nodeIP[p]; ok {
			c.nodeDirty[p] = true
		}
	}
	for _, p := range d.Delete {
		if _, ok := c.nodeIP[p]; ok {
			c.nodeDirty[p] = true
		}
	}
	var ks []policymap.IPCacheKey
	var vs []policymap.IPCacheValue
	var del []policymap.IPCacheKey
	var engine map[netip.Prefix]identity.ID
	l7d := policy.IPCacheDelta{Upsert: map[netip.Prefix]identity.ID{}}
	for p := range c.nodeDirty {
		id, ok := c.nodeIP[p]
		if !ok {
			if engine == nil {
				engine = c.engine.IPCache()
			}
			id, ok = engine[p]
		}
		if ok {
			ks, vs = append(ks, policymap.IPCacheKeyOf(p)), append(vs, policymap.IPCacheValue{Identity: uint32(id)})
			l7d.Upsert[p] = id
		} else {
			del = append(del, policymap.IPCacheKeyOf(p))
			l7d.Delete = append(l7d.Delete, p)
		}
	}
	if err := c.maps.IPCache.Update(ks, vs); err != nil {
		return err
	}
	if c.l7 != nil {
		c.l7.SetIPCache(l7d)
	}
	if err := c.maps.IPCache.Delete(del); err != nil {
		return err
	}
	clear(c.nodeDirty)
	return nil
}

// liveEndpoint: an endpoint id the CNI still has a record of.
func (c *policyCtl) liveEndpoint(id uint16) bool {
	if c.eps == nil {
		return false
	}
	for _, ep := range c.eps.List() {
		if ep.ID == id {
			return true
		}
	}
	return false
}

// attachment finds a pod's host veth and endpoint id in the CNI's records.
func (c *policyCtl) attachment(pod policy.PodName) (policymap.Attachment, bool) {
	if c.eps == nil {
		return policymap.Attachment{}, false
	}
	for _, ep := range c.eps.List() {
		if ep.Pod.Namespace != pod.Namespace || ep.Pod.Name != pod.Name {
			continue
		}
		h, err := datapath.NetlinkAt(c.netns)
		if err != nil {
			return policymap.Attachment{}, false
		}
		l, err := h.LinkByName(ep.Interface)
		h.Close()
		if err != nil {
			return policymap.Attachment{}, false
		}
		at := policymap.Attachment{Ifindex: uint32(l.Attrs().Index), ID: ep.ID}
		for _, ip := range ep.IPs {
			if ip.Is4() {
				at.Addr4 = ip
				break
			}
		}
		return at, true
	}
	return policymap.Attachment{}, false
}

// setEndpoints gives the controller the CNI's endpoint records.
func (c *policyCtl) setEndpoints(eps *endpoint.Store) {
	c.mu.Lock()
	c.eps = eps
	c.mu.Unlock()
}

// endpointAdded is the CNI's ADD hook: tc_policy goes on the pod's veth
// (tc_lb is already there) and the pod's policy, if computed, is written.
func (c *policyCtl) endpointAdded(ep endpoint.Endpoint) error {
	ifc := datapath.Iface{NetNS: c.netns, Name: ep.Interface}
	if err := c.dp.AttachPolicy(ifc, datapath.TCMode(ep.TC)); err != nil {
		return err
	}
	if c.l7 != nil {
		// Flows from the node to the pod may be turned around into
		// the veth for the L7 proxy (docs/l7.md).
		if err := podnet.AcceptLocal(c.netns, ep.Interface); err != nil {
			return err
		}
	}
	if ep.Pod.Name == "" {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rec.Attached(policy.PodName{Namespace: ep.Pod.Namespace, Name: ep.Pod.Name})
}

// collectIdentities runs identity.GC every identityGCInterval.
func (c *policyCtl) collectIdentities(ctx context.Context) {
	every(ctx, identityGCInterval, func() {
		if ids, err := c.gc.Sweep(ctx); err != nil {
			c.log.Warn("policy: identity GC", "error", err)
		} else if len(ids) > 0 {
			c.log.Info("policy: identities collected", "identities", fmt.Sprint(ids))
		}
	})
}
