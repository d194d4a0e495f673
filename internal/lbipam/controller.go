package lbipam

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
)

// Component names the operator in Events.
const Component = "fastpath-operator"

// Event reasons besides the Reason values of failed allocations.
const (
	EventAllocated = "LoadBalancerIPAllocated"
	EventReleased  = "LoadBalancerIPReleased"
)

// Queue keys besides a Service's namespace/name (which cannot start with NUL).
const (
	poolsKey       = "\x00pools"        // reread the pools, revisit every Service
	poolsStatusKey = "\x00pools-status" // rewrite the pools' counts
)

// Controller assigns pool addresses to Services. Run it only while
// leading (RunLeaderElected): two controllers would each trust their own
// view.
type Controller struct {
	client kubernetes.Interface
	dyn    dynamic.Interface
	log    *slog.Logger
	rec    record.EventRecorder

	alloc    *Allocator
	waiting  map[string]bool // Services that got no address, retried when one is freed
	services corelisters.ServiceLister
	pools    cache.GenericLister
	queue    workqueue.TypedRateLimitingInterface[string]
}

// NewController returns a controller; Run starts it.
func NewController(client kubernetes.Interface, dyn dynamic.Interface, log *slog.Logger) *Controller {
	return &Controller{client: client, dyn: dyn, log: log, alloc: NewAllocator(), waiting: map[string]bool{}}
}

// Run watches Services and pools and allocates until ctx ends. It first
// rebuilds the allocation from every Service's status, so nothing moves
// and nothing is handed out twice across restarts and leader changes.
func (c *Controller) Run(ctx context.Context) error {
	b := record.NewBroadcaster(record.WithContext(ctx))
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.client.CoreV1().Events("")})
	defer b.Shutdown()
	c.rec = b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: Component})

	c.queue = workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())
	defer c.queue.ShutDown()
	sf := informers.NewSharedInformerFactory(c.client, 0)
	svcInf := sf.Core().V1().Services()
	pf := dynamicinformer.NewDynamicSharedInformerFactory(c.dyn, 0)
	poolInf := pf.ForResource(PoolGVR)
	c.services, c.pools = svcInf.Lister(), poolInf.Lister()
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			c.queue.Add(key)
		}
	}
	if _, err := svcInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue, UpdateFunc: func(_, n any) { enqueue(n) }, DeleteFunc: enqueue,
	}); err != nil {
		return err
	}
	pools := func(any) { c.queue.Add(poolsKey) }
	if _, err := poolInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: pools, DeleteFunc: pools,
		UpdateFunc: func(o, n any) {
			// Our own status writes change no generation: no full revisit.
			if o.(*unstructured.Unstructured).GetGeneration() != n.(*unstructured.Unstructured).GetGeneration() {
				pools(n)
			}
		},
	}); err != nil {
		return err
	}
	sf.Start(ctx.Done())
	pf.Start(ctx.Done())
	defer sf.Shutdown()
	defer pf.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), svcInf.Informer().HasSynced, poolInf.Informer().HasSynced) {
		return nil // stopped before it started: nothing to report
	}
	c.syncPools()
	if err := c.adoptAll(); err != nil {
		return err
	}
	go func() { <-ctx.Done(); c.queue.ShutDown() }()
	for c.next(ctx) {
	}
	return nil
}

// adoptAll records every address already in a Service status, oldest
// Service first (it wins a duplicate, which only a writer other than the
// leader can have made), before any new address is given.
func (c *Controller) adoptAll() error {
	svcs, err := c.services.List(labels.Everything())
	if err != nil {
		return err
	}
	// creationTimestamp has seconds: names order Services of one second.
	slices.SortFunc(svcs, func(x, y *corev1.Service) int {
		return cmp.Or(x.CreationTimestamp.Compare(y.CreationTimestamp.Time),
			cmp.Compare(x.Namespace, y.Namespace), cmp.Compare(x.Name, y.Name))
	})
	for _, svc := range svcs {
		key := svc.Namespace + "/" + svc.Name
		if !Managed(svc) {
			c.alloc.SetForeign(key, foreignIPs(svc))
			continue
		}
		if req, err := RequestFor(svc); err == nil {
			c.alloc.Adopt(req, statusIP(svc))
		}
	}
	return nil
}

// foreignIPs are the addresses in the status of a LoadBalancer Service
// of another class: another controller's, or ours left behind when the
// Service moved to that class (we do not take them away from it). Either
// way they must not be handed out while they are there.
func foreignIPs(svc *corev1.Service) []netip.Addr {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || Managed(svc) {
		return nil
	}
	return statusIPs(svc)
}

func (c *Controller) next(ctx context.Context) bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(key)
	var err error
	freed := c.alloc.Freed()
	switch key {
	case poolsKey:
		c.syncPools()
	case poolsStatusKey:
		err = c.writePoolStatuses(ctx)
	default:
		err = c.syncService(ctx, key)
	}
	if c.alloc.Freed() != freed {
		for k := range c.waiting {
			c.queue.Add(k)
		}
		c.queue.Add(poolsStatusKey)
	}
	switch {
	case err == nil:
		c.queue.Forget(key)
	case apierrors.IsConflict(err) || apierrors.IsNotFound(err):
		// A newer version is on its way through the informer.
		c.queue.AddRateLimited(key)
	default:
		c.log.Error("lbipam sync", "key", key, "err", err)
		c.queue.AddRateLimited(key)
	}
	return true
}

// syncPools reads every pool, then revisits every Service: a pool change
// can give a waiting Service an address or take one away.
func (c *Controller) syncPools() {
	objs, err := c.pools.List(labels.Everything())
	if err != nil {
		c.log.Error("lbipam list pools", "err", err)
		return
	}
	var pools []*Pool
	for _, o := range objs {
		if p, err := ParsePool(o.(*unstructured.Unstructured)); err == nil {
			pools = append(pools, p)
		}
	}
	c.alloc.SetPools(pools)
	svcs, _ := c.services.List(labels.Everything())
	for _, svc := range svcs {
		c.queue.Add(svc.Namespace + "/" + svc.Name)
	}
	c.queue.Add(poolsStatusKey)
}

// syncService brings one Service's status in line with the allocator.
// Whenever the allocator releases an address, the status loses it in the
// same step, so an address is never in two statuses.
func (c *Controller) syncService(ctx context.Context, key string) error {
	ns, name, _ := cache.SplitMetaNamespaceKey(key)
	svc, err := c.services.Services(ns).Get(name)
	if apierrors.IsNotFound(err) {
		c.release(key)
		return nil
	} else if err != nil {
		return err
	}
	if !Managed(svc) {
		had := c.release(key)
		c.alloc.SetForeign(key, foreignIPs(svc))
		if !hasOurCondition(svc) {
			return nil
		}
		// Left LoadBalancer or our class: take back what we wrote.
		out := svc.DeepCopy()
		meta.RemoveStatusCondition(&out.Status.Conditions, ConditionType)
		if svc.Spec.Type != corev1.ServiceTypeLoadBalancer {
			out.Status.LoadBalancer.Ingress = nil
		}
		if err := c.writeStatus(ctx, out); err != nil {
			return err
		}
		if had {
			c.rec.Eventf(svc, corev1.EventTypeNormal, EventReleased, "released: the Service is no longer a LoadBalancer of class %s or none", Class)
		}
		return nil
	}
	c.alloc.SetForeign(key, nil)
	out := svc.DeepCopy()
	cond := metav1.Condition{Type: ConditionType, ObservedGeneration: svc.Generation}
	req, err := RequestFor(svc)
	var ip netip.Addr
	var aerr *Error
	if err != nil {
		c.release(key)
		aerr = &Error{ReasonBadRequest, err.Error()}
	} else {
		ip, aerr = c.alloc.Ensure(req, statusIP(svc))
		c.queue.Add(poolsStatusKey)
	}
	delete(c.waiting, key)
	if aerr != nil {
		c.waiting[key] = true
		out.Status.LoadBalancer.Ingress = nil
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, string(aerr.Reason), aerr.Message
	} else {
		out.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip.String(), IPMode: ptrTo(corev1.LoadBalancerIPModeVIP)}}
		cond.Status, cond.Reason, cond.Message = metav1.ConditionTrue, string(ReasonAllocated), fmt.Sprintf("%s from pool %s", ip, c.poolOf(ip))
	}
	changedCond := meta.SetStatusCondition(&out.Status.Conditions, cond)
	if err := c.writeStatus(ctx, out); err != nil {
		return err
	}
	if changedCond {
		if aerr != nil {
			c.log.Info("lbipam: no address", "service", key, "reason", aerr.Reason, "message", aerr.Message)
			c.rec.Event(svc, corev1.EventTypeWarning, string(aerr.Reason), aerr.Message)
		} else {
			c.log.Info("lbipam: allocated", "service", key, "address", cond.Message)
			c.rec.Event(svc, corev1.EventTypeNormal, EventAllocated, cond.Message)
		}
	}
	return nil
}

// release frees key's address and reports whether it held one.
func (c *Controller) release(key string) bool {
	delete(c.waiting, key)
	_, had := c.alloc.Holds(key)
	c.alloc.Release(key)
	c.alloc.SetForeign(key, nil)
	if had {
		c.log.Info("lbipam: released", "service", key)
	}
	return had
}

func (c *Controller) poolOf(ip netip.Addr) string {
	for _, p := range c.alloc.pools {
		if p.Contains(ip) {
			return p.Name
		}
	}
	return "?"
}

// writeStatus updates the status when it differs from the cached one.
func (c *Controller) writeStatus(ctx context.Context, out *corev1.Service) error {
	cur, err := c.services.Services(out.Namespace).Get(out.Name)
	if err == nil && equalStatus(&cur.Status, &out.Status) {
		return nil
	}
	_, err = c.client.CoreV1().Services(out.Namespace).UpdateStatus(ctx, out, metav1.UpdateOptions{FieldManager: Component})
	return err
}

func equalStatus(a, b *corev1.ServiceStatus) bool {
	if !slices.EqualFunc(a.LoadBalancer.Ingress, b.LoadBalancer.Ingress, func(x, y corev1.LoadBalancerIngress) bool {
		return x.IP == y.IP && x.Hostname == y.Hostname && (x.IPMode == nil) == (y.IPMode == nil) && (x.IPMode == nil || *x.IPMode == *y.IPMode)
	}) {
		return false
	}
	return sameCondition(meta.FindStatusCondition(a.Conditions, ConditionType), meta.FindStatusCondition(b.Conditions, ConditionType))
}

// sameCondition ignores lastTransitionTime, which SetStatusCondition
// keeps while the status stays.
func sameCondition(x, y *metav1.Condition) bool {
	if x == nil || y == nil {
		return x == y
	}
	return x.Status == y.Status && x.Reason == y.Reason && x.Message == y.Message && x.ObservedGeneration == y.ObservedGeneration
}

func hasOurCondition(svc *corev1.Service) bool {
	return meta.FindStatusCondition(svc.Status.Conditions, ConditionType) != nil
}

func ptrTo[T any](v T) *T { return &v }
