package k8s

import (
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/fastpath-net/fastpath/internal/k8s/svctranslate"
	"github.com/fastpath-net/fastpath/internal/loadbalancer"
)

// HealthCheck is what the healthCheckNodePort server of one Service needs
// (kube-proxy's ServicePortMap.HealthCheckNodePorts and
// EndpointsMap.LocalReadyEndpoints).
type HealthCheck struct {
	// NodePort is spec.healthCheckNodePort of a LoadBalancer Service with
	// externalTrafficPolicy Local; 0: the Service has no health check.
	NodePort uint16
	// LocalEndpoints counts the distinct addresses of this node's ready
	// IPv4 endpoints. Terminating ones do not count, even while they still
	// serve: a load balancer should stop sending new traffic to the node.
	LocalEndpoints int
}

// healthCheckOf is the health check of a translated Service.
func healthCheckOf(res svctranslate.Result, slices []*discoveryv1.EndpointSlice, nodeName string) HealthCheck {
	if res.HealthCheckNodePort == 0 {
		return HealthCheck{}
	}
	return HealthCheck{NodePort: res.HealthCheckNodePort, LocalEndpoints: localReady(slices, nodeName)}
}

// localReady counts, like kube-proxy, addresses rather than endpoints: a
// pod listed in two slices (two port sets) is one endpoint. An unset ready
// condition means ready.
func localReady(slices []*discoveryv1.EndpointSlice, nodeName string) int {
	seen := map[netip.Addr]struct{}{}
	for _, s := range slices {
		if s.AddressType != discoveryv1.AddressTypeIPv4 {
			continue
		}
		for _, ep := range s.Endpoints {
			if ep.NodeName == nil || *ep.NodeName != nodeName || len(ep.Addresses) == 0 {
				continue
			}
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			if a, err := netip.ParseAddr(ep.Addresses[0]); err == nil {
				seen[a] = struct{}{}
			}
		}
	}
	return len(seen)
}

// toBeDeletedTaint marks a node the cluster autoscaler is about to remove.
const toBeDeletedTaint = "ToBeDeletedByClusterAutoscaler"

// nodeEligible is kube-proxy's ProxyHealthServer.NodeEligible: load
// balancers should stop sending to a node that is gone, being deleted or
// drained by the autoscaler.
func nodeEligible(n *corev1.Node) bool {
	if n == nil || !n.DeletionTimestamp.IsZero() {
		return false
	}
	for _, t := range n.Spec.Taints {
		if t.Key == toBeDeletedTaint {
			return false
		}
	}
	return true
}

// NodeEligible reports whether this node's Node object exists and is
// neither being deleted nor tainted for deletion by the cluster autoscaler
// (false until the watcher has seen it).
func (w *Watcher) NodeEligible() bool { return w.eligible.Load() }

// ReasonHealthCheckFailed is kube-proxy's Event reason for a
// healthCheckNodePort this node cannot open.
const ReasonHealthCheckFailed = "FailedToStartServiceHealthcheck"

// ReportHealthCheckError reports a health-check port that cannot be opened
// as kube-proxy does: a Warning Event on the Service with the same reason
// and message, and a log line.
func (w *Watcher) ReportHealthCheckError(name loadbalancer.ServiceName, port uint16, err error) {
	msg := fmt.Sprintf("node %s failed to start healthcheck %q on port %d: %v", w.cfg.NodeName, name.String(), port, err)
	w.log.Warn("cannot serve health check", "kind", "Service", "object", name.String(), "port", port, "error", err)
	if svc, gerr := w.services.Services(name.Namespace).Get(name.Name); gerr == nil {
		w.rep.event(svc, ReasonHealthCheckFailed, msg)
	}
}
