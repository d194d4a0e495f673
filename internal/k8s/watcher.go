// Package k8s is the Kubernetes source of services: it watches Services,
// EndpointSlices and this node's Node object with client-go informers and
// hands the agent the loadbalancer.Service values that changed, translated
// by svctranslate.
//
// Flow: informer events mark Services dirty (an EndpointSlice event marks the
// Service its kubernetes.io/service-name label names; a change of the node's
// addresses or zone marks only the Services whose last translation used
// them). One worker takes the dirty set, translates only those Services from
// the informer caches, and calls the handler with the batch. Work per event
// is O(changed Services), never O(all Services).
//
// Batching: the first change after a quiet period is handled at once; later
// ones wait until MinInterval (default 10ms) after the previous batch began,
// piling up in the dirty set meanwhile. A rollout updates slices many times
// a second; 10ms keeps a single change's delay far below what clients
// notice, while a burst costs at most 100 batches a second, each one table
// update and one reconciler Sync. (kube-proxy waits 1s between syncs because
// each costs an iptables-restore; a map update costs microseconds.) A slow
// handler slows the batches down rather than queueing them: changes coalesce
// in the dirty set, so a Service changed ten times during one Sync is
// translated once.
package k8s

import (
	"context"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/fastpath-net/fastpath/internal/k8s/svctranslate"
	"github.com/fastpath-net/fastpath/internal/loadbalancer"
)

// DefaultMinInterval is the least time between two batches.
const DefaultMinInterval = 10 * time.Millisecond

// Config configures a Watcher.
type Config struct {
	Client        kubernetes.Interface
	NodeName      string         // this node's Node name
	NodePortCIDRs []netip.Prefix // --nodeport-addresses; empty: every node address
	// ProxyName is --service-proxy-name: "" serves the Services without
	// the service.kubernetes.io/service-proxy-name label (kube-proxy's
	// choice); a name serves only those whose label equals it.
	ProxyName string
	Log       *slog.Logger
	// MinInterval is the least time between two batches; 0 means
	// DefaultMinInterval.
	MinInterval time.Duration
	// Recorder receives the Events about objects that cannot be
	// programmed; nil means events to the apiserver through Client.
	Recorder record.EventRecorder
}

// Update is one batch of changes for the table.
type Update struct {
	// Full marks the first Update after the caches synced: Upserted then
	// holds every Service this node programs, and the receiver drops
	// whatever else it holds (Services deleted while no agent watched) and
	// repairs the maps with a full resync.
	Full     bool
	Upserted []loadbalancer.Service
	Deleted  []loadbalancer.ServiceName
	// HealthChecks holds an entry for every Service in Upserted (NodePort
	// 0 when it has none); Deleted Services have none any more.
	HealthChecks map[loadbalancer.ServiceName]HealthCheck
	// TriggerTimes are the EndpointSlice change times (trigger.go) this
	// batch programs: once it is in the datapath, now minus each is one
	// network-programming latency.
	TriggerTimes []time.Time
}

// Watcher is the Kubernetes source. Create it with New and start it with Run.
type Watcher struct {
	cfg Config
	log *slog.Logger

	factory     informers.SharedInformerFactory // Services, EndpointSlices
	nodeFactory informers.SharedInformerFactory // this node only
	services    corelisters.ServiceLister
	synced      []cache.InformerSynced

	mu        sync.Mutex // guards the fields below; informer handlers and the worker share them
	dirty     map[loadbalancer.ServiceName]struct{}
	node      svctranslate.Node
	nodeSeen  bool
	addrUsers map[loadbalancer.ServiceName]struct{} // last translation had nodePorts
	zoneUsers map[loadbalancer.ServiceName]struct{} // last translation saw zone hints
	triggers  map[loadbalancer.ServiceName][]time.Time
	bySvc     map[loadbalancer.ServiceName][]*discoveryv1.EndpointSlice // the slice cache's objects by the Service they label
	kick      chan struct{}

	started  time.Time   // trigger times before it are ignored
	eligible atomic.Bool // this node's Node exists, is not being deleted nor drained by the autoscaler

	// Owned by the worker goroutine.
	delivered  map[loadbalancer.ServiceName]delivery
	seed       maphash.Seed                   // of the delivered sums
	translated func(loadbalancer.ServiceName) // test hook: called per translation

	rep *reporter
}

// New builds a Watcher; nothing talks to the apiserver before Run.
func New(cfg Config) (*Watcher, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.MinInterval <= 0 {
		cfg.MinInterval = DefaultMinInterval
	}
	if cfg.ProxyName != "" {
		if err := ValidateProxyName(cfg.ProxyName); err != nil {
			return nil, fmt.Errorf("service proxy name: %w", err)
		}
	}
	w := &Watcher{
		cfg:       cfg,
		log:       cfg.Log,
		dirty:     map[loadbalancer.ServiceName]struct{}{},
		node:      cfg.node(nil),
		addrUsers: map[loadbalancer.ServiceName]struct{}{},
		zoneUsers: map[loadbalancer.ServiceName]struct{}{},
		triggers:  map[loadbalancer.ServiceName][]time.Time{},
		bySvc:     map[loadbalancer.ServiceName][]*discoveryv1.EndpointSlice{},
		kick:      make(chan struct{}, 1),
		started:   time.Now(),
		delivered: map[loadbalancer.ServiceName]delivery{},
		seed:      maphash.MakeSeed(),
		rep:       newReporter(cfg.Log),
	}
	if err := w.setupInformers(); err != nil {
		return nil, err
	}
	return w, nil
}

// Run watches until ctx ends, calling handle with every batch, one at a
// time, from one goroutine. It waits for the caches first - for as long as
// the apiserver stays unreachable, while client-go retries with backoff - so
// the caller must not hold the datapath back on it: the pinned state keeps
// serving meanwhile. Run returns ctx's error; call it once.
func (w *Watcher) Run(ctx context.Context, handle func(Update)) error {
	rec, stop := w.cfg.Recorder, func() {}
	if rec == nil {
		rec, stop = APIRecorder(w.cfg.Client, w.cfg.NodeName)
	}
	defer stop()
	w.rep.setRecorder(rec)
	w.factory.Start(ctx.Done())
	w.nodeFactory.Start(ctx.Done())
	defer w.nodeFactory.Shutdown()
	defer w.factory.Shutdown()
	if !w.waitForCaches(ctx) {
		return ctx.Err()
	}
	w.warnIfNoNode()
	handle(w.fullUpdate())
	return w.work(ctx, handle)
}

// waitForCaches polls the informers and says every 10s that it still
// waits, so an operator sees why nothing changes.
func (w *Watcher) waitForCaches(ctx context.Context) bool {
	start := time.Now()
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
	nextLog := start.Add(10 * time.Second)
	for !allSynced(w.synced) {
		select {
		case <-ctx.Done():
			return false
		case now := <-poll.C:
			if now.After(nextLog) {
				w.log.Warn("still waiting for the Kubernetes API; the datapath keeps serving the pinned state",
					"waited", now.Sub(start).Round(time.Second).String())
				nextLog = now.Add(10 * time.Second)
			}
		}
	}
	w.log.Info("Kubernetes caches synced", "took", time.Since(start).Round(time.Millisecond).String())
	return true
}

// warnIfNoNode points at a wrong --node-name early: without the Node there
// are no NodePort addresses, and nothing else would say why.
func (w *Watcher) warnIfNoNode() {
	w.mu.Lock()
	seen := w.nodeSeen
	w.mu.Unlock()
	if !seen {
		w.log.Warn("this node's Node object does not exist (yet): no NodePort frontends until it does; check --node-name",
			"node", w.cfg.NodeName)
	}
}

func allSynced(fns []cache.InformerSynced) bool {
	for _, f := range fns {
		if !f() {
			return false
		}
	}
	return true
}

// work hands out batches until ctx ends.
func (w *Watcher) work(ctx context.Context, handle func(Update)) error {
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-w.kick:
		}
		if wait := w.cfg.MinInterval - time.Since(last); wait > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait):
			}
		}
		last = time.Now()
		if u := w.batch(); len(u.Upserted)+len(u.Deleted) > 0 {
			handle(u)
		}
	}
}

// ReportProgramError tells the watcher that programming name failed in the
// table (a frontend another Service owns, too many backends), or succeeded
// again with err nil. A new error becomes a Warning event on the Service
// and a log line; repeats of the same error are not re-sent.
func (w *Watcher) ReportProgramError(name loadbalancer.ServiceName, err error) {
	var svc *corev1.Service // the Event's object; nil when gone from the cache
	if err != nil {
		svc, _ = w.services.Services(name.Namespace).Get(name.Name)
	}
	w.rep.programError(name, svc, err)
}

// node is what translations know of this node, from its Node object (nil
// before it is seen) and the agent's settings.
func (c *Config) node(obj *corev1.Node) svctranslate.Node {
	n := svctranslate.NodeFromObject(c.NodeName, obj, c.NodePortCIDRs)
	n.ProxyName = c.ProxyName
	return n
}
