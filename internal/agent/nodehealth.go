package agent

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"

	"github.com/fastpath-net/fastpath/internal/ctl"
	"github.com/fastpath-net/fastpath/internal/metrics"
	"github.com/fastpath-net/fastpath/internal/nodehealth"
)

// startNodeProbes probes every other node's agent (/livez on this agent's
// healthz port, assumed the same on every node, as the DaemonSet makes
// it) every NodeProbeInterval; nil without Kubernetes, without a healthz
// address or with the interval 0.
func (a *Agent) startNodeProbes(ctx context.Context) *nodehealth.Prober {
	if a.client == nil || a.cfg.NodeProbeInterval <= 0 || a.cfg.Ops.HealthzAddr == "" {
		return nil
	}
	_, p, err := net.SplitHostPort(a.cfg.Ops.HealthzAddr)
	port, _ := strconv.Atoi(p)
	if err != nil || port == 0 {
		return nil
	}
	self := a.cfg.Kubernetes.NodeName
	f := informers.NewSharedInformerFactory(a.client, 0)
	lister := f.Core().V1().Nodes().Lister()
	f.Start(ctx.Done())
	peers := func() []nodehealth.Peer {
		nodes, _ := lister.List(labels.Everything())
		var out []nodehealth.Peer
		for _, n := range nodes {
			if addr, ok := internalIP(n); ok && n.Name != self {
				out = append(out, nodehealth.Peer{Name: n.Name, Addr: addr})
			}
		}
		return out
	}
	prober := nodehealth.New(a.cfg.NetNS, port, min(2*time.Second, a.cfg.NodeProbeInterval), peers)
	go func() {
		f.WaitForCacheSync(ctx.Done())
		prober.Run(ctx, a.cfg.NodeProbeInterval)
	}()
	return prober
}

func internalIP(n *corev1.Node) (netip.Addr, bool) {
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

// nodeProbes are the probes for /metrics.
func (a *Agent) nodeProbes() []metrics.NodeProbe {
	var out []metrics.NodeProbe
	for _, r := range a.nodes.Results() {
		out = append(out, metrics.NodeProbe{Node: r.Node, Reachable: r.Reachable, Latency: r.Latency})
	}
	return out
}

// nodeHealth are the probes for fastpathctl status.
func (a *Agent) nodeHealth() []ctl.NodeHealth {
	var out []ctl.NodeHealth
	for _, r := range a.nodes.Results() {
		out = append(out, ctl.NodeHealth{Node: r.Node, Address: r.Address, Reachability: ctl.Reachability{
			OK: r.Reachable, LatencyMS: float64(r.Latency.Microseconds()) / 1000, Error: r.Error}})
	}
	return out
}
