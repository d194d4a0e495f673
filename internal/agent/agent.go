// Package agent wires fastpath's pieces on one node: it loads the datapath,
// attaches it, feeds the desired-state table from a source, and keeps the
// BPF maps equal to that table.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"k8s.io/client-go/kubernetes"

	"github.com/fastpath-net/fastpath/internal/datapath"
	"github.com/fastpath-net/fastpath/internal/datapath/ctmap"
	"github.com/fastpath-net/fastpath/internal/datapath/socklb"
	"github.com/fastpath-net/fastpath/internal/endpoint"
	"github.com/fastpath-net/fastpath/internal/k8s"
	"github.com/fastpath-net/fastpath/internal/l2announce"
	"github.com/fastpath-net/fastpath/internal/loadbalancer"
	"github.com/fastpath-net/fastpath/internal/nodehealth"
)

// Config is everything the agent is told on its command line.
type Config struct {
	PinDir       string          // bpffs directory for pins
	NetNS        string          // network namespace path to attach in; "" = own
	Interfaces   []string        // interfaces whose ingress gets the TC program
	Cgroup       string          // cgroup v2 directory for socket LB; "" = off
	ServicesFile string          // standalone source of services
	Kubernetes   *Kubernetes     // the Kubernetes API as source; nil: off
	PollInterval time.Duration   // how often the services file is checked
	GCInterval   time.Duration   // conntrack garbage collection period
	ResyncPeriod time.Duration   // full compare of maps and table, repairs drift
	TC           datapath.TCMode // tcx, clsact or auto
	Sizes        datapath.Sizes
	// CTMemoryRatio sizes fp_ct from the node's RAM when Sizes.CT is 0.
	CTMemoryRatio float64
	// NodeProbeInterval: how often the other nodes' agents are probed
	// (nodehealth.go); 0: never.
	NodeProbeInterval time.Duration
	// RecreateIncompatibleMaps (--map-layout-mismatch=recreate) replaces
	// pinned maps of another layout instead of refusing to start.
	RecreateIncompatibleMaps bool
	Log                      *slog.Logger
	Network                  Network  // external interfaces and masquerade (network.go)
	CNI                      *CNI     // the CNI API for fastpath-cni (cni.go); nil: off
	Routing                  *Routing // pod traffic to other nodes (routing.go); nil: off
	Ops                      Ops      // metrics, health and pprof endpoints (ops.go)
	Monitor                  Monitor  // verdict records and the flow stream (flows.go)

	// L2 is ARP for LoadBalancer IPs (l2.go); nil: off. BGP is not here:
	// cmd/fastpath-bgp is its own process, so the agent does not link GoBGP.
	L2 *L2Announce

	// Policy enforces NetworkPolicy (policy.go): needs Kubernetes; pods get
	// it through the CNI.
	Policy bool
	// L7Proxy runs the HTTP policy proxy (l7.go); needs Policy. nil: off,
	// and flows whose policy has HTTP rules are dropped.
	L7Proxy *L7Proxy
}

// Agent is a running node agent.
type Agent struct {
	cfg   Config
	log   *slog.Logger
	dp    *datapath.Datapath
	table *loadbalancer.Table
	rec   *loadbalancer.Reconciler
	// haveState is set once a source delivered its whole state. Until then
	// the table is empty and the maps hold what an earlier agent pinned, so
	// a full resync would delete every service still being served.
	haveState bool
	kube      *k8s.Watcher         // nil unless Kubernetes is the source
	client    kubernetes.Interface // nil unless Kubernetes is the source
	ops       *ops

	l2     *l2announce.Announcer // nil unless announcing
	policy *policyCtl            // nil unless Config.Policy
	flows  *flowMonitor
	ct     ctPressure // fp_ct's fill, judged at each GC walk
	// attachPending: maps were recreated empty, so the programs attach
	// only after the first full sync; the old ones serve until then.
	attachPending bool

	errors    *recentErrors      // the newest warnings and errors, for status
	syncState syncState          // the last sync, for status
	nodes     *nodehealth.Prober // nil unless probing other nodes
	epsMu     sync.Mutex
	eps       *endpoint.Store // the CNI's endpoints; nil without the CNI
}

// Run starts the agent and blocks until ctx ends. On return the datapath
// stays pinned and attached, and keeps serving the last programmed state.
func Run(ctx context.Context, cfg Config) error {
	started := time.Now()
	var recent *recentErrors
	cfg.Log, recent = withErrorRing(orDefaultLog(cfg.Log))
	// The Kubernetes client is built first: a bad kubeconfig is a
	// configuration error, found before the datapath is touched. Building
	// it does not contact the apiserver. One client serves every part of
	// the agent that reads the cluster.
	client, err := newKubeClient(cfg)
	if err != nil {
		return err
	}
	kube, err := newKubeWatcher(cfg, client)
	if err != nil {
		return err
	}
	route, err := startRouting(&cfg, client)
	if err != nil {
		return err
	}
	// The informers' first list is the longest part of a cold start
	// (seconds, with tens of thousands of Services) and needs nothing of
	// the datapath: it runs while the programs load and attach. Its first
	// update waits in the channel until the loop takes it.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	kubeUpdates := make(chan k8s.Update)
	if kube != nil {
		go watchKube(ctx, kube, kubeUpdates, orDefaultLog(cfg.Log))
	}
	a, err := start(cfg)
	if err != nil {
		return err
	}
	defer a.dp.Close()
	a.kube = kube
	a.errors = recent
	a.client = client
	l2, stopL2, err := startL2(ctx, cfg, client)
	if err != nil {
		return err
	}
	defer stopL2()
	a.l2 = l2
	if cfg.Policy {
		if a.policy, err = newPolicyCtl(a.cfg, a.dp); err != nil {
			return err
		}
		if cfg.L7Proxy != nil {
			a.policy.enableL7(cfg.L7Proxy.Port)
		}
	}
	if cfg.CNI != nil {
		if err := a.startCNI(ctx); err != nil {
			return err
		}
	}
	if !a.attachPending {
		a.finishCarry()
	}
	if a.flows, err = a.startFlows(ctx); err != nil {
		return err
	}
	a.nodes = a.startNodeProbes(ctx)
	a.ops = a.startOps(ctx, started)
	defer a.ops.close()
	a.ct = ctPressure{log: a.log, metrics: a.ops.metrics, cpus: possibleCPUs()}
	if client != nil {
		rec, stopEvents := k8s.APIRecorder(client, cfg.Kubernetes.NodeName)
		defer stopEvents()
		a.ct.event = nodeEvents(rec, cfg.Kubernetes.NodeName)
	}
	if route != nil {
		go route(ctx)
	}
	// The proxy starts once its access log has somewhere to go: with
	// pinned policy maps, redirected flows may arrive at once.
	if cfg.Policy && cfg.L7Proxy != nil {
		waitL7, err := a.startL7(ctx)
		if err != nil {
			return err
		}
		// Before the datapath closes: draining requests look up fp_ct.
		defer waitL7()
	}
	if a.policy != nil {
		a.policy.metrics = a.ops.metrics
		go a.policy.run(ctx, client)
	}
	return a.loop(ctx, kubeUpdates)
}

func orDefaultLog(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.Default()
	}
	return l
}

// loadDatapath is datapath.Load; tests replace it.
var loadDatapath = datapath.Load

func start(cfg Config) (*Agent, error) {
	cfg.Log = orDefaultLog(cfg.Log)
	dpCfg, err := datapathConfig(cfg)
	if err != nil {
		return nil, err
	}
	dp, err := loadDatapath(dpCfg)
	if err != nil {
		return nil, err
	}
	a := &Agent{
		cfg:   cfg,
		log:   cfg.Log,
		dp:    dp,
		table: loadbalancer.NewTable(),
		rec:   loadbalancer.NewReconciler(dp.LB, loadbalancer.ReconcilerOptions{TrackGoneUDP: true}),
	}
	// Adopt what a previous agent programmed before touching anything, so
	// IDs of live backends stay stable and established flows keep working.
	// Restore also flags the INTERNAL twins an older agent left unflagged;
	// it must run before attach, as this agent's programs find INTERNAL
	// entries only through the flag.
	if err := a.rec.Restore(); err != nil {
		dp.Close()
		return nil, fmt.Errorf("restore state from pinned maps: %w", err)
	}
	for _, c := range dp.Carried() {
		a.log.Info("carried a pinned map of an older layout: its entries are in the new map, the old programs use the old one until replaced",
			"map", c.Map, "fromLayout", c.FromLayout, "toLayout", datapath.MapLayoutVersion, "entries", c.Entries, "took", c.Took)
	}
	if re := dp.Recreated(); len(re) > 0 {
		a.log.Warn("pinned maps of another layout were created anew; the programs attach once they are programmed, "+
			"the old datapath serves until then", "maps", re)
		a.attachPending = true
		return a, nil
	}
	if err := a.attach(); err != nil {
		dp.Close()
		return nil, err
	}
	return a, nil
}

func (a *Agent) attach() error {
	for _, name := range a.cfg.Interfaces {
		ifc := datapath.Iface{NetNS: a.cfg.NetNS, Name: name}
		mode, err := a.dp.AttachTC(ifc)
		if err != nil {
			return err
		}
		a.log.Info("attached per-packet load balancer", "interface", ifc.String(), "mode", string(mode))
	}
	if err := a.attachExternal(); err != nil {
		return err
	}
	if a.cfg.Cgroup != "" {
		pinDir := filepath.Join(a.cfg.PinDir, "links")
		if err := socklb.Attach(a.dp.SockObjects(), a.cfg.Cgroup, pinDir); err != nil {
			return fmt.Errorf("socket LB on cgroup %s: %w", a.cfg.Cgroup, err)
		}
		a.log.Info("attached socket load balancer", "cgroup", a.cfg.Cgroup)
	}
	return nil
}

// loop programs what the sources deliver until ctx ends; kubeUpdates
// carries the Kubernetes source's batches (Run starts its watch).
func (a *Agent) loop(ctx context.Context, kubeUpdates <-chan k8s.Update) error {
	updates := make(chan []loadbalancer.Service, 1)
	if a.cfg.ServicesFile != "" {
		go watchFile(ctx, a.cfg.ServicesFile, a.cfg.PollInterval, updates, a.log)
	}
	gcCtx, stopGC := context.WithCancel(ctx)
	defer stopGC()
	// Conntrack GC runs beside the loop that programs Services: a walk of
	// a full map at thousands of new connections a second takes about a
	// second of CPU, and Service changes used to wait behind it.
	go every(gcCtx, orDefault(a.cfg.GCInterval, 30*time.Second), func() { a.collectGarbage(gcCtx) })
	resync := time.NewTicker(orDefault(a.cfg.ResyncPeriod, 5*time.Minute))
	defer resync.Stop()
	retry := newBackoff(100*time.Millisecond, 10*time.Second)
	defer retry.stop()
	for {
		var ok bool
		select {
		case <-ctx.Done():
			a.log.Info("stopping; the datapath stays pinned and keeps serving")
			return nil
		case svcs := <-updates:
			a.ops.proxy.QueuedUpdate()
			ok = a.apply(svcs, !a.haveState)
			// Parsing a large file churns far more memory than the
			// tables keep; hand it back now rather than when the runtime
			// gets round to it, so RSS reflects what the agent holds.
			debug.FreeOSMemory()
			if err := a.attachWhenProgrammed(ok); err != nil {
				return err
			}
		case u := <-kubeUpdates:
			a.ops.received(u)
			ok = a.applyKube(u)
			if u.Full {
				// The informers' first list and the update holding every
				// Service churn several times what the caches and the
				// table keep: hand it back, as after a file.
				debug.FreeOSMemory()
			}
			if err := a.attachWhenProgrammed(ok); err != nil {
				return err
			}
		case <-retry.C():
			ok = a.sync(false)
		case <-resync.C:
			if !a.haveState {
				a.log.Warn("skipping the periodic resync: no source has delivered its state yet; the pinned state keeps serving")
				continue
			}
			ok = a.sync(true)
			// A full resync reads every map whole and plans every
			// frontend: scratch of over half the tables' size. A GC
			// finding it live doubles the heap goal, and the heap grows
			// towards it until the next resync does the same; hand it
			// back now, as after a file.
			debug.FreeOSMemory()
		}
		// Frontends that failed stay dirty in the table; retry them soon
		// rather than at the next source change.
		if ok {
			retry.reset()
		} else {
			retry.schedule()
		}
	}
}

// attachWhenProgrammed attaches the programs held back by recreated maps,
// once a sync of the whole source state succeeded.
func (a *Agent) attachWhenProgrammed(synced bool) error {
	if !a.attachPending || !synced || !a.haveState {
		return nil
	}
	if err := a.attach(); err != nil {
		return err
	}
	if eps := a.endpoints(); eps != nil {
		a.reattachPods(eps)
	}
	a.finishCarry()
	a.attachPending = false
	a.syncState.set(a, nil)
	a.log.Info("recreated maps programmed; this agent's programs are attached")
	return nil
}

// finishCarry, once every program of this agent is attached (pods'
// veths too), copies into the carried maps the entries the old programs
// created meanwhile and lets the old maps go. A failure loses only those
// flows: it is logged, not fatal.
func (a *Agent) finishCarry() {
	done, err := a.dp.FinishCarry()
	for _, c := range done {
		a.log.Info("carried map handed over: the old programs are replaced and their late entries copied",
			"map", c.Map, "lateEntries", c.LateEntries)
	}
	if err != nil {
		a.log.Error("flows started by the old programs during the upgrade may be lost", "error", err)
	}
}

// apply makes the table equal to the source's services. The first state
// after start is a full resync, repairing whatever drifted while no agent ran.
func (a *Agent) apply(svcs []loadbalancer.Service, full bool) bool {
	seen := make(map[loadbalancer.ServiceName]struct{}, len(svcs))
	for _, svc := range svcs {
		seen[svc.Name] = struct{}{}
		a.upsert(svc)
	}
	// The table holds every service the source delivered valid (an invalid
	// one keeps its last valid version or is absent); it is the list of
	// services to forget, so the agent keeps no second copy of the names.
	for _, name := range a.table.Names() {
		if _, ok := seen[name]; !ok {
			a.delete(name)
		}
	}
	a.haveState = true
	return a.sync(full)
}

// upsert puts svc in the table; what the table refuses is logged and, for
// Kubernetes, reported on the Service as an Event.
func (a *Agent) upsert(svc loadbalancer.Service) {
	err := a.table.Upsert(svc)
	if err != nil {
		a.log.Error("cannot program service", "service", svc.Name.String(), "error", err)
	}
	if a.kube != nil {
		a.kube.ReportProgramError(svc.Name, err)
	}
}

func (a *Agent) delete(name loadbalancer.ServiceName) {
	a.table.Delete(name)
	if a.kube != nil {
		a.kube.ReportProgramError(name, nil)
	}
}

// sync writes the table's changes (or everything that differs, when full)
// to the maps and reports whether all of it was programmed.
func (a *Agent) sync(full bool) bool {
	start := time.Now()
	var err error
	if full {
		err = a.rec.Resync(a.table)
	} else {
		err = a.rec.Sync(a.table)
	}
	// Also after a partial failure: what was written may have removed
	// UDP backends.
	a.flushGoneUDP()
	a.ops.synced(full, time.Since(start), err)
	a.syncState.set(a, err)
	if err != nil {
		a.log.Error("programming the datapath failed; will retry", "error", err)
		return false
	}
	// Kubernetes changes come up to 100 times a second in a rollout: those
	// syncs log at debug level; full ones and file changes at info.
	level := slog.LevelInfo
	if a.kube != nil && !full {
		level = slog.LevelDebug
	}
	a.log.Log(context.Background(), level, "datapath programmed", "full", full, "services", a.table.Len(), "took", time.Since(start).String())
	return true
}

// every calls fn every d until ctx ends; a call that overruns d delays the
// next instead of queueing calls behind it.
func every(ctx context.Context, d time.Duration, fn func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}

// gcShare is the share of one CPU a conntrack walk may take: it pauses
// after each chunk for three times the chunk's work, so a walk that needs
// a second of CPU spreads over four instead of taking a core (on a
// two-core node, half the machine) for that second.
const gcShare = 0.25

func (a *Agent) collectGarbage(ctx context.Context) {
	start := time.Now()
	res, err := ctmap.CollectPaced(a.dp.CT, ctmap.Now(), func(busy time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(time.Duration(float64(busy) * (1/gcShare - 1))):
			return true
		}
	})
	if errors.Is(err, ctmap.ErrStopped) {
		return
	}
	a.ops.metrics.ObserveGC(res.Deleted, time.Since(start), err != nil)
	if err != nil {
		a.log.Error("conntrack gc", "error", err)
		return
	}
	// Judged by the fill before the deletes: after them, a map that was
	// evicting all along looks roomy. In bench-datapath (-paired-hot) at
	// 15,000 new connections/s, fp_ct (262,144 entries) evicted REPLY
	// tombstones seconds old, whose tuples then met backends' TIME_WAIT
	// unprepared (SYNs refused by PAWS, a third of TC's rate; none with
	// 2^21 entries). A paced walk spans seconds while the LRU evicts and
	// refills, and can meet more entries than the map holds at once
	// (285,560 of 262,144): capped.
	a.ct.observe(min(res.Seen, a.dp.CT.MaxEntries()), a.dp.CT.MaxEntries())
	if res.Deleted > 0 || res.Rewritten > 0 {
		a.log.Debug("conntrack gc", "seen", res.Seen, "deleted", res.Deleted, "live", res.Live, "rewritten", res.Rewritten)
	}
}

func possibleCPUs() int {
	n, err := ebpf.PossibleCPU()
	if err != nil {
		return 1
	}
	return n
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// ErrNoSource is returned when the agent has nothing to program from.
var ErrNoSource = errors.New("no source of services: give --services-file, or --kubeconfig, or run in a pod")
