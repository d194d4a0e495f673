package k8s

import (
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/informers"
	coreinformers "k8s.io/client-go/informers/core/v1"
	discoveryinformers "k8s.io/client-go/informers/discovery/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/fastpath-net/fastpath/internal/k8s/svctranslate"
	"github.com/fastpath-net/fastpath/internal/loadbalancer"
)

// proxySelector is the informers' label selector for --service-proxy-name
// name. With no name it is kube-proxy's: no Service another proxy owns, no
// slice of a headless Service. With a name, only what carries that name
// (Cilium's --k8s-service-proxy-name). Slices take the same selector as
// Services: the EndpointSlice controller copies a Service's labels onto its
// slices, and a slice is only ever read through its Service, so a slice
// of a Service this agent does not serve is not worth caching.
func proxySelector(name string) string {
	owner := "!" + svctranslate.LabelServiceProxyName
	if name != "" {
		owner = svctranslate.LabelServiceProxyName + "=" + name
	}
	return owner + ",!" + svctranslate.LabelHeadless
}

// ValidateProxyName checks a --service-proxy-name: it is compared with a
// label's value, so it must be one.
func ValidateProxyName(name string) error {
	if errs := validation.IsValidLabelValue(name); len(errs) > 0 {
		return fmt.Errorf("%q is not a label value: %s", name, strings.Join(errs, "; "))
	}
	return nil
}

func (w *Watcher) setupInformers() error {
	// No periodic informer resync: it would re-deliver every object and
	// recompute every Service. The agent's own periodic map Resync repairs
	// drift in the maps.
	w.factory = informers.NewSharedInformerFactoryWithOptions(w.cfg.Client, 0, informers.WithTransform(trimForCache))
	selector := proxySelector(w.cfg.ProxyName)
	tweak := func(o *metav1.ListOptions) { o.LabelSelector = selector }
	// Built here rather than by the factory's Services() and
	// EndpointSlices(), whose namespace index nothing reads: one set of
	// every object's key per namespace. Slices are found by Service in
	// w.bySvc, not with an index: client-go's holds a set per Service.
	svcInf := w.factory.InformerFor(&corev1.Service{}, func(c kubernetes.Interface, resync time.Duration) cache.SharedIndexInformer {
		return coreinformers.NewFilteredServiceInformer(c, metav1.NamespaceAll, resync, cache.Indexers{}, tweak)
	})
	sliceInf := w.factory.InformerFor(&discoveryv1.EndpointSlice{}, func(c kubernetes.Interface, resync time.Duration) cache.SharedIndexInformer {
		return discoveryinformers.NewFilteredEndpointSliceInformer(c, metav1.NamespaceAll, resync, cache.Indexers{}, tweak)
	})
	w.services = corelisters.NewServiceLister(svcInf.GetIndexer())
	nodeSelector := fields.OneTermEqualSelector("metadata.name", w.cfg.NodeName).String()
	w.nodeFactory = informers.NewSharedInformerFactoryWithOptions(w.cfg.Client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = nodeSelector }),
		informers.WithTransform(StripManagedFields))
	nodeInf := w.nodeFactory.Core().V1().Nodes().Informer()
	for _, reg := range []struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandler
	}{
		{svcInf, handler(w.onService)},
		{sliceInf, cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { w.noteSlice(obj, triggerRecord) },
			UpdateFunc: w.onSliceUpdate,
			DeleteFunc: func(obj any) { w.noteSlice(unwrap(obj), triggerDrop) },
		}},
		{nodeInf, cache.ResourceEventHandlerFuncs{AddFunc: w.onNode, UpdateFunc: func(_, n any) { w.onNode(n) }, DeleteFunc: func(any) { w.setNode(nil) }}},
	} {
		r, err := reg.inf.AddEventHandler(reg.h)
		if err != nil {
			return err
		}
		// The registration's HasSynced also waits until the handler has
		// seen every object of the initial list, so the node's facts are
		// in place before the first full update.
		w.synced = append(w.synced, r.HasSynced)
	}
	return nil
}

// handler calls f with the object of every add, update and delete.
func handler(f func(any)) cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{AddFunc: f, UpdateFunc: func(_, n any) { f(n) }, DeleteFunc: f}
}

// trimForCache is the transform of the Service and EndpointSlice caches:
// they keep only what the translation reads.
func trimForCache(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Service:
		svctranslate.TrimService(o)
	case *discoveryv1.EndpointSlice:
		svctranslate.TrimSlice(o)
	default: // a tombstone holds the object as the cache had it: trimmed
		return StripManagedFields(obj)
	}
	return obj, nil
}

// StripManagedFields drops what the translation never reads and the caches
// would otherwise hold for every object: managedFields are often the larger
// part of a Service.
func StripManagedFields(obj any) (any, error) {
	if m, err := meta.Accessor(obj); err == nil {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

// unwrap returns the object of a delete event, which is a tombstone when
// the watch missed the deletion.
func unwrap(obj any) any {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		return t.Obj
	}
	return obj
}

func (w *Watcher) onService(obj any) {
	if svc, ok := unwrap(obj).(*corev1.Service); ok {
		w.markDirty(svctranslate.NameOf(svc))
	}
}

// onSliceUpdate marks both Services when the label moved a slice between
// them. A slice that stays with its Service is replaced in its list under
// the same lock that marks it dirty: the worker never sees it missing.
func (w *Watcher) onSliceUpdate(old, cur any) {
	from, was := sliceService(old)
	to, is := sliceService(cur)
	if was && (!is || from != to) {
		w.mu.Lock()
		w.unfile(from, old.(*discoveryv1.EndpointSlice))
		w.dirty[from] = struct{}{}
		w.mu.Unlock()
		w.wake()
	}
	act := triggerRecord
	if !endpointsChanged(old, cur) {
		act = triggerIgnore
	}
	w.noteSlice(cur, act)
}

func sliceService(obj any) (loadbalancer.ServiceName, bool) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok || s.Labels[discoveryv1.LabelServiceName] == "" {
		return loadbalancer.ServiceName{}, false
	}
	return loadbalancer.ServiceName{Namespace: s.Namespace, Name: s.Labels[discoveryv1.LabelServiceName]}, true
}

// slicesOf returns the Service's slices, as the slice handlers have seen
// them.
func (w *Watcher) slicesOf(name loadbalancer.ServiceName) []*discoveryv1.EndpointSlice {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.bySvc[name])
}

// file puts s in its Service's list, replacing the slice of its name; the
// caller holds w.mu.
func (w *Watcher) file(name loadbalancer.ServiceName, s *discoveryv1.EndpointSlice) {
	list := w.bySvc[name]
	for i, o := range list {
		if o.Name == s.Name {
			list[i] = s
			return
		}
	}
	w.bySvc[name] = append(list, s)
}

// unfile removes the slice of s's name from the Service's list; the caller
// holds w.mu.
func (w *Watcher) unfile(name loadbalancer.ServiceName, s *discoveryv1.EndpointSlice) {
	list := slices.DeleteFunc(w.bySvc[name], func(o *discoveryv1.EndpointSlice) bool { return o.Name == s.Name })
	if len(list) == 0 {
		delete(w.bySvc, name)
		return
	}
	w.bySvc[name] = list
}

func (w *Watcher) onNode(obj any) {
	if n, ok := unwrap(obj).(*corev1.Node); ok {
		w.setNode(n)
	}
}

// setNode takes this node's new facts and marks dirty only the Services
// whose translation used what changed: addresses for NodePorts, the zone for
// topology hints.
func (w *Watcher) setNode(obj *corev1.Node) {
	n := w.cfg.node(obj)
	w.eligible.Store(nodeEligible(obj))
	w.mu.Lock()
	old := w.node
	w.node = n
	if obj != nil && !w.nodeSeen {
		w.log.Info("node found", "node", n.Name, "zone", n.Zone, "addresses", fmt.Sprint(n.Addresses))
	}
	w.nodeSeen = obj != nil
	marked := 0
	if !slices.Equal(old.Addresses, n.Addresses) {
		marked += markAll(w.dirty, w.addrUsers)
	}
	if old.Zone != n.Zone {
		marked += markAll(w.dirty, w.zoneUsers)
	}
	w.mu.Unlock()
	if marked > 0 {
		w.log.Info("node changed; recomputing the services that depend on it", "node", n.Name,
			"zone", n.Zone, "addresses", fmt.Sprint(n.Addresses), "services", marked)
		w.wake()
	}
}

func markAll(dirty, users map[loadbalancer.ServiceName]struct{}) int {
	for name := range users {
		dirty[name] = struct{}{}
	}
	return len(users)
}

func (w *Watcher) markDirty(name loadbalancer.ServiceName) {
	w.mu.Lock()
	w.dirty[name] = struct{}{}
	w.mu.Unlock()
	w.wake()
}

// wake tells the worker there is work; a pending wake-up is enough.
func (w *Watcher) wake() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}
