package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/fastpath-net/fastpath/internal/datapath/policymap"
	"github.com/fastpath-net/fastpath/internal/flows"
	"github.com/fastpath-net/fastpath/internal/flows/flowmap"
	"github.com/fastpath-net/fastpath/internal/identity"
	"github.com/fastpath-net/fastpath/internal/policy"
)

// Monitor configures the datapath's verdict records and who reads them.
type Monitor struct {
	// AllowSample: 1 in AllowSample new flows a policy allowed is
	// recorded; 0: none.
	AllowSample uint32
	// DropsPerSec is the per-CPU budget of drop records (policy's and
	// tc_lb's); 0: no limit.
	DropsPerSec uint32
	// Addr is where the flow stream (/v1/flows) and the flow map
	// (/flows/) are served, inside --netns; empty: off (the ring is still
	// read, so `fastpathctl monitor` has to find the agent).
	Addr string
}

// Defaults of the flags.
const (
	DefaultAllowSample = 100
	DefaultDropsPerSec = 100
	DefaultMonitorAddr = "127.0.0.1:10264"
)

// flowMonitor is the agent's one reader of the verdict ring: records
// become events with names (flows.FromVerdict) on hub.
type flowMonitor struct {
	hub      *flows.Hub
	fm       *flowmap.Map // the flow map page's edges
	counters *ebpf.Map    // fp_policy_metrics
}

// unwritten is how many records the datapath did not write (over the
// drop budget, or the ring full), summed over CPUs.
func (m *flowMonitor) unwritten() uint64 {
	var n uint64
	for _, idx := range []uint32{policymap.MetricRingLost, policymap.MetricRateLimited} {
		var perCPU []uint64
		if err := m.counters.Lookup(idx, &perCPU); err != nil {
			continue
		}
		for _, c := range perCPU {
			n += c
		}
	}
	return n
}

// startFlows writes the records' settings and starts reading the ring.
// The agent is the ring's only reader while it runs: a ring buffer has one
// consumer position, so every other reader goes through hub.
func (a *Agent) startFlows(ctx context.Context) (*flowMonitor, error) {
	c := a.cfg.Monitor
	cfg := policymap.PolicyConfig{AllowSample: c.AllowSample, DropsPerSec: c.DropsPerSec}
	if err := a.dp.VerdictConfig().Update([]uint32{0}, []policymap.PolicyConfig{cfg}); err != nil {
		return nil, fmt.Errorf("write fp_policy_config: %w", err)
	}
	r, err := ringbuf.NewReader(a.dp.Verdicts())
	if err != nil {
		return nil, fmt.Errorf("verdict ring: %w", err)
	}
	m := &flowMonitor{hub: flows.NewHub(), fm: flowmap.New(flowMapWindow, flowMapEdges), counters: a.dp.VerdictCounters()}
	go m.fm.Run(ctx, m.hub)
	node := ""
	if a.cfg.Kubernetes != nil {
		node = a.cfg.Kubernetes.NodeName
	}
	names := agentNames{a}
	go func() {
		defer r.Close()
		err := policymap.Stream(ctx, r, policymap.Filter{}, 0, func(v policymap.Verdict) error {
			e := flows.FromVerdict(v, v.WallTime(), names)
			e.Node = node
			m.hub.Publish(e)
			return nil
		})
		if err != nil && !errors.Is(err, ringbuf.ErrClosed) {
			a.log.Error("verdict ring reader stopped", "error", err)
		}
	}()
	if c.Addr != "" {
		go a.serve(ctx, "flows", c.Addr, m.handler())
	}
	return m, nil
}

// The flow map shows the edges of the last 15 minutes, at most 5,000 (a
// few hundred KiB).
const (
	flowMapWindow = 15 * time.Minute
	flowMapEdges  = 5000
)

// handler is the flow monitor's HTTP API: /v1/flows streams events,
// /flows/ is the flow map page and /v1/flowmap its data.
func (m *flowMonitor) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/v1/flows", flows.StreamHandler(m.hub, m.unwritten))
	fm := m.fm.Handler()
	mux.Handle("/v1/flowmap", fm)
	mux.Handle("/flows/", fm)
	mux.Handle("/flows", fm)
	return mux
}

// agentNames resolves a record's numbers from what the agent holds: the
// CNI's endpoint records (local pods), the policy engine (identities,
// explanations) and the service table. Events are rare next to packets
// (drops are budgeted, allows sampled), so plain scans are fine.
type agentNames struct{ a *Agent }

func (n agentNames) Pod(ip netip.Addr) (string, string) {
	if eps := n.a.endpoints(); eps != nil {
		for _, ep := range eps.List() {
			for _, a := range ep.IPs {
				if a == ip {
					return ep.Pod.Namespace, ep.Pod.Name
				}
			}
		}
	}
	// Pods of other nodes: the policy's Pod informer, when it runs.
	if pc := n.a.policy; pc != nil {
		pc.mu.Lock()
		idx := pc.podsByIP
		pc.mu.Unlock()
		if idx == nil {
			return "", ""
		}
		if objs, err := idx.ByIndex(podIPIndex, ip.String()); err == nil && len(objs) == 1 {
			if p, ok := objs[0].(*corev1.Pod); ok {
				return p.Namespace, p.Name
			}
		}
	}
	return "", ""
}

// podIPIndex indexes pods by the addresses in status.podIPs; host-network
// pods are left out (they share the node's address).
const podIPIndex = "podIP"

// indexPodIPs adds the pod-IP index to the Pod informer before it starts
// and keeps its indexer for agentNames; it returns inf.
func (c *policyCtl) indexPodIPs(inf cache.SharedIndexInformer) cache.SharedIndexInformer {
	err := inf.AddIndexers(cache.Indexers{podIPIndex: func(obj any) ([]string, error) {
		p, ok := obj.(*corev1.Pod)
		if !ok || p.Spec.HostNetwork {
			return nil, nil
		}
		ips := make([]string, 0, len(p.Status.PodIPs))
		for _, ip := range p.Status.PodIPs {
			ips = append(ips, ip.IP)
		}
		return ips, nil
	}})
	if err != nil {
		c.log.Error("policy: pod IP index (flow events will not name pods of other nodes)", "error", err)
		return inf
	}
	c.mu.Lock()
	c.podsByIP = inf.GetIndexer()
	c.mu.Unlock()
	return inf
}

func (n agentNames) Identity(id identity.ID) (string, []string, string) {
	pc := n.a.policy
	if pc == nil {
		return "", nil, ""
	}
	pc.mu.Lock()
	d := pc.engine.DescribeIdentity(id) // "4711 (ns:k=v,k=v)", "9 (cidr 10.0.0.0/8)" or a name
	pc.mu.Unlock()
	_, rest, ok := strings.Cut(d, " (")
	if !ok {
		return "", nil, ""
	}
	rest = strings.TrimSuffix(rest, ")")
	if cidr, ok := strings.CutPrefix(rest, "cidr "); ok {
		return "", nil, cidr
	}
	ns, kv, _ := strings.Cut(rest, ":")
	var labels []string
	if kv != "" {
		labels = strings.Split(kv, ",")
	}
	return ns, labels, ""
}

func (n agentNames) Service(revNatID uint32, proto uint8) string {
	fe, ok, err := n.a.dp.LB.RevNat.Lookup(revNatID)
	if err != nil || !ok {
		return ""
	}
	ap := netip.AddrPortFrom(fe.Addr.IP(), fe.Port)
	if name, ok := n.a.table.FrontendOwner(ap.Addr(), ap.Port(), proto); ok {
		return fmt.Sprintf("%s (%s)", name, ap)
	}
	return ap.String()
}

func (n agentNames) Explain(ns, pod string, d policy.Direction, peer identity.ID, proto policy.Proto, port uint16) string {
	pc := n.a.policy
	if pc == nil {
		return ""
	}
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return pc.engine.Explain(policy.PodName{Namespace: ns, Name: pod}, d, peer, proto, port)
}
