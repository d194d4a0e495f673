// Package metrics is the agent's Prometheus registry: control-plane
// latencies and counts the agent observes, and datapath counters and map
// fill read from the pinned BPF maps at every scrape (datapath.go). Names
// follow the Prometheus conventions: fastpath_ prefix, base units
// (seconds, bytes), _total for counters.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// IPv4 is the ip_family label value of everything fastpath programs today.
const IPv4 = "IPv4"

// Sync modes, the mode label of the sync metrics.
const (
	SyncPartial = "partial" // the changed frontends only
	SyncFull    = "full"    // compare every map entry with the desired state
)

// programmingBuckets are kube-proxy's buckets for
// network_programming_duration_seconds (pkg/proxy/metrics), so dashboards
// and SLO queries written for kube-proxy read fastpath's the same way:
// 0.25s, 0.5s, 1..59s, 60..115s by 5s, 120..300s by 30s.
func programmingBuckets() []float64 {
	b := prometheus.LinearBuckets(0.25, 0.25, 2)
	b = append(b, prometheus.LinearBuckets(1, 1, 59)...)
	b = append(b, prometheus.LinearBuckets(60, 5, 12)...)
	return append(b, prometheus.LinearBuckets(120, 30, 7)...)
}

// Metrics holds the agent's collectors. The zero value is not usable; a
// nil *Metrics is, and records nothing (the agent without --metrics-addr).
type Metrics struct {
	Registry *prometheus.Registry

	programming *prometheus.HistogramVec
	syncTime    *prometheus.HistogramVec
	syncErrors  *prometheus.CounterVec
	gcTime      prometheus.Histogram
	gcDeleted   prometheus.Counter
	gcErrors    prometheus.Counter
	ctFull      prometheus.Gauge
	ctFullWalks prometheus.Counter
	policyTime  *prometheus.HistogramVec
	l7Requests  *prometheus.CounterVec
}

// New returns a registry with the Go runtime and process collectors and
// the agent's own metrics.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		programming: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "fastpath_network_programming_duration_seconds",
			Help: "Time from an EndpointSlice change (its endpoints.kubernetes.io/last-change-trigger-time) " +
				"until the datapath serves it; kube-proxy's network_programming_duration_seconds.",
			Buckets: programmingBuckets(),
		}, []string{"ip_family"}),
		syncTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "fastpath_sync_duration_seconds",
			Help: "Time to write desired-state changes into the BPF maps, by mode (partial: changed frontends, full: everything compared).",
			// 50us to ~6.5s: a partial sync of one Service takes tens of
			// microseconds, a full one at 50,000 Services seconds.
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 18),
		}, []string{"mode"}),
		syncErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fastpath_sync_errors_total",
			Help: "Syncs that left some frontends unprogrammed (retried with backoff), by mode.",
		}, []string{"mode"}),
		gcTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "fastpath_conntrack_gc_duration_seconds",
			Help: "Wall time of one conntrack garbage-collection walk of fp_ct (paced to a quarter of one CPU).",
			// 1ms to ~33s: a walk costs a few microseconds of CPU per
			// dead entry, and takes four times that paced.
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		gcDeleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fastpath_conntrack_gc_deleted_total",
			Help: "Expired conntrack entries removed by garbage collection (LRU evictions of a full map are not counted here).",
		}),
		gcErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fastpath_conntrack_gc_errors_total",
			Help: "Conntrack garbage-collection walks that failed (see the agent's log).",
		}),
		ctFull: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fastpath_conntrack_full",
			Help: "1 while the last garbage-collection walk found fp_ct at its usable capacity (max entries less the LRU's per-CPU free lists): " +
				"new flows evict the least recently used entries. " +
				"fastpath_bpf_map_fill_ratio{map=\"fp_ct\"} warns before.",
		}),
		ctFullWalks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fastpath_conntrack_full_walks_total",
			Help: "Garbage-collection walks that found fp_ct full (evicting), so a full table between two scrapes is not missed.",
		}),
		policyTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "fastpath_policy_duration_seconds",
			Help: "Time of one NetworkPolicy update by phase: compute (the Engine recomputes the endpoints a change touched) " +
				"and write (the policy maps and ipcache updated).",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 18),
		}, []string{"phase"}),
		l7Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fastpath_l7_requests_total",
			Help: "HTTP requests the L7 proxy judged, by verdict (allowed, denied) and direction of the policy that judged them (ingress, egress).",
		}, []string{"verdict", "direction"}),
	}
	m.Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.programming, m.syncTime, m.syncErrors, m.gcTime, m.gcDeleted, m.gcErrors, m.ctFull, m.ctFullWalks, m.policyTime, m.l7Requests,
	)
	// Export the series before the first observation, so a scrape shows
	// them (at zero) and rate() works from the first sample.
	m.programming.WithLabelValues(IPv4)
	for _, mode := range []string{SyncPartial, SyncFull} {
		m.syncTime.WithLabelValues(mode)
		m.syncErrors.WithLabelValues(mode)
	}
	return m
}

// ObserveSync records one sync of the maps.
func (m *Metrics) ObserveSync(mode string, took time.Duration, failed bool) {
	if m == nil {
		return
	}
	m.syncTime.WithLabelValues(mode).Observe(took.Seconds())
	if failed {
		m.syncErrors.WithLabelValues(mode).Inc()
	}
}

// ObserveGC records one conntrack garbage-collection walk.
func (m *Metrics) ObserveGC(deleted int, took time.Duration, failed bool) {
	if m == nil {
		return
	}
	m.gcTime.Observe(took.Seconds())
	m.gcDeleted.Add(float64(deleted))
	if failed {
		m.gcErrors.Inc()
	}
}

// Policy phases, the phase label of fastpath_policy_duration_seconds.
const (
	PolicyCompute = "compute"
	PolicyWrite   = "write"
)

// ObservePolicy records one phase of a NetworkPolicy update.
func (m *Metrics) ObservePolicy(phase string, took time.Duration) {
	if m == nil {
		return
	}
	m.policyTime.WithLabelValues(phase).Observe(took.Seconds())
}

// ObserveL7Request counts one request the L7 proxy judged.
func (m *Metrics) ObserveL7Request(verdict, direction string) {
	if m == nil {
		return
	}
	m.l7Requests.WithLabelValues(verdict, direction).Inc()
}

// ObserveCTFill records whether a GC walk found fp_ct full.
func (m *Metrics) ObserveCTFill(full bool) {
	if m == nil {
		return
	}
	if full {
		m.ctFull.Set(1)
		m.ctFullWalks.Inc()
		return
	}
	m.ctFull.Set(0)
}

// ObserveProgrammed records the programming latency of each trigger time,
// now being when the datapath started serving the change.
func (m *Metrics) ObserveProgrammed(triggers []time.Time, now time.Time) {
	if m == nil {
		return
	}
	h := m.programming.WithLabelValues(IPv4)
	for _, t := range triggers {
		h.Observe(now.Sub(t).Seconds())
	}
}

// Programmed are the agent's counts, read at every scrape.
type Programmed struct {
	Services  int // Services in the desired state
	Frontends int // frontends in the service map
	Backends  int // backends in the backend map
	Pending   int // frontends changed and not yet programmed (retried)
}

// SetProgrammedFunc exports fastpath_{services,frontends,backends}_programmed
// and fastpath_frontends_pending from f, called once per scrape.
func (m *Metrics) SetProgrammedFunc(f func() Programmed) {
	if m == nil {
		return
	}
	m.Registry.MustRegister(&programmedCollector{f: f})
}

var (
	descServices = prometheus.NewDesc("fastpath_services_programmed",
		"Services in the desired state; all their frontends are in the datapath unless fastpath_frontends_pending > 0.", nil, nil)
	descFrontends = prometheus.NewDesc("fastpath_frontends_programmed",
		"Frontends (address, port, protocol, scope) in the service map.", nil, nil)
	descBackends = prometheus.NewDesc("fastpath_backends_programmed",
		"Backends in the backend map.", nil, nil)
	descPending = prometheus.NewDesc("fastpath_frontends_pending",
		"Frontends changed in the desired state and not programmed yet (a failed sync is retried with backoff).", nil, nil)
)

// programmedCollector reads the four counts with one call.
type programmedCollector struct{ f func() Programmed }

func (c *programmedCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descServices
	ch <- descFrontends
	ch <- descBackends
	ch <- descPending
}

func (c *programmedCollector) Collect(ch chan<- prometheus.Metric) {
	p := c.f()
	ch <- prometheus.MustNewConstMetric(descServices, prometheus.GaugeValue, float64(p.Services))
	ch <- prometheus.MustNewConstMetric(descFrontends, prometheus.GaugeValue, float64(p.Frontends))
	ch <- prometheus.MustNewConstMetric(descBackends, prometheus.GaugeValue, float64(p.Backends))
	ch <- prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, float64(p.Pending))
}

// NodeProbe is the last probe of another node's agent.
type NodeProbe struct {
	Node      string
	Reachable bool
	Latency   time.Duration // of the last answered probe
}

var (
	descNodeReachable = prometheus.NewDesc("fastpath_node_reachable",
		"1 when the last probe of the node's agent (/livez on its healthz port) answered, 0 when not.", []string{"node"}, nil)
	descNodeLatency = prometheus.NewDesc("fastpath_node_probe_latency_seconds",
		"Round trip of the last answered probe of the node's agent.", []string{"node"}, nil)
)

// SetNodeProbesFunc exports the node probes f returns at every scrape.
func (m *Metrics) SetNodeProbesFunc(f func() []NodeProbe) {
	if m == nil {
		return
	}
	m.Registry.MustRegister(nodeProbeCollector(f))
}

type nodeProbeCollector func() []NodeProbe

func (c nodeProbeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descNodeReachable
	ch <- descNodeLatency
}

func (c nodeProbeCollector) Collect(ch chan<- prometheus.Metric) {
	for _, p := range c() {
		up := 0.0
		if p.Reachable {
			up = 1
			ch <- prometheus.MustNewConstMetric(descNodeLatency, prometheus.GaugeValue, p.Latency.Seconds(), p.Node)
		}
		ch <- prometheus.MustNewConstMetric(descNodeReachable, prometheus.GaugeValue, up, p.Node)
	}
}
