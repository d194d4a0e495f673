package svctranslate

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/fastpath-net/fastpath/internal/loadbalancer"
)

// Kubernetes' default and bound for ClientIP affinity (core/v1 defaults and
// validation).
const (
	defaultAffinitySeconds = 10800
	maxAffinitySeconds     = 86400
)

// skipReason applies kube-proxy's ShouldSkipService and its informers'
// label selector, and refuses what has no IPv4 ClusterIP.
func (t *translation) skipReason() string {
	spec := &t.svc.Spec
	switch {
	case !ServesProxyName(t.svc.Labels, t.node.ProxyName):
		return proxyNameSkip(t.svc.Labels, t.node.ProxyName)
	case spec.Type == corev1.ServiceTypeExternalName:
		return "type ExternalName has no virtual IP"
	case spec.ClusterIP == corev1.ClusterIPNone:
		return "headless (clusterIP None)"
	case spec.ClusterIP == "" && len(spec.ClusterIPs) == 0:
		return "no ClusterIP assigned yet"
	}
	for _, s := range clusterIPStrings(spec) {
		if a, err := netip.ParseAddr(s); err == nil && a.Is4() {
			return ""
		}
	}
	t.problem("spec.clusterIPs", "no IPv4 ClusterIP in %v; fastpath programs IPv4 only, so this Service is not reachable through it", clusterIPStrings(spec))
	return "no IPv4 ClusterIP"
}

// ServesProxyName says whether an agent with --service-proxy-name name
// serves an object with these labels: the watcher's informers select the
// same, so a Service that reaches Translate fails it only when handed over
// directly (tests, tools).
func ServesProxyName(labels map[string]string, name string) bool {
	v, ok := labels[LabelServiceProxyName]
	if name == "" {
		return !ok
	}
	return ok && v == name
}

// proxyNameSkip says why a Service ServesProxyName refused is not this
// agent's, naming the flag when the agent's own name is what excludes it.
func proxyNameSkip(labels map[string]string, name string) string {
	v, ok := labels[LabelServiceProxyName]
	if !ok {
		return "not labelled " + LabelServiceProxyName + "=" + name + ", the name this agent serves (--service-proxy-name)"
	}
	return "label " + LabelServiceProxyName + "=" + v + " gives it to another proxy"
}

// clusterIPStrings is spec.clusterIPs, or spec.clusterIP for objects written
// before dual-stack (the apiserver fills both today).
func clusterIPStrings(spec *corev1.ServiceSpec) []string {
	if len(spec.ClusterIPs) > 0 {
		return spec.ClusterIPs
	}
	return []string{spec.ClusterIP}
}

// readPolicies reads the traffic policies (kube-proxy's
// apiservice.ExternalPolicyLocal / InternalPolicyLocal), affinity and the
// health-check port.
func (t *translation) readPolicies() {
	spec := &t.svc.Spec
	// An empty type is ClusterIP: the apiserver defaults it, hand-written
	// test objects may not.
	clusterIPType := spec.Type == corev1.ServiceTypeClusterIP || spec.Type == ""
	externallyAccessible := spec.Type == corev1.ServiceTypeLoadBalancer || spec.Type == corev1.ServiceTypeNodePort ||
		(clusterIPType && len(spec.ExternalIPs) > 0)
	t.etpLocal = externallyAccessible && spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal
	t.itpLocal = spec.InternalTrafficPolicy != nil && *spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal
	t.affinity = t.readAffinity()
	t.readHealthCheck()
}

// readSourceRanges reads spec.loadBalancerSourceRanges as kube-proxy does:
// IPv4 ranges (IPv6 ones belong to the other family's proxier), invalid ones
// reported and left out; a /0 range, or no valid IPv4 range at all, means
// no filter. When a range holds one of the node's addresses, the
// load-balancer IPs themselves are allowed as sources too (kube-proxy's
// allowFromNode): a node that has the VIP as a local address reaches it
// with the VIP as its source. Call after readVIPs.
func (t *translation) readSourceRanges() {
	spec := &t.svc.Spec
	if len(spec.LoadBalancerSourceRanges) == 0 {
		return
	}
	// The node's addresses decide allowFromNode: recompute on their change.
	t.res.UsesNodeAddresses = true
	var ranges []netip.Prefix
	allowAll, allowFromNode := false, false
	for i, s := range spec.LoadBalancerSourceRanges {
		field := fmt.Sprintf("spec.loadBalancerSourceRanges[%d]", i)
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		switch {
		case err != nil:
			t.problem(field, "%q is not a CIDR; left out, the other ranges still apply", s)
			continue
		case !p.Addr().Is4():
			t.note(field, "IPv6 range %s does not apply to IPv4 frontends", p)
			continue
		}
		p = p.Masked()
		if p.Bits() == 0 {
			allowAll = true
		}
		for _, a := range t.node.Addresses {
			if p.Contains(a.Unmap()) {
				allowFromNode = true
			}
		}
		if !slices.Contains(ranges, p) {
			ranges = append(ranges, p)
		}
	}
	if allowAll || len(ranges) == 0 {
		return
	}
	if allowFromNode {
		for _, v := range t.external {
			if p := netip.PrefixFrom(v.addr, 32); v.typ == loadbalancer.LoadBalancer && !slices.Contains(ranges, p) {
				ranges = append(ranges, p)
			}
		}
	}
	t.sourceRanges = ranges
}

// readHealthCheck reports the port a load balancer probes to find the nodes
// with local endpoints (kube-proxy's apiservice.NeedsHealthCheck).
func (t *translation) readHealthCheck() {
	spec := &t.svc.Spec
	if !t.etpLocal || spec.Type != corev1.ServiceTypeLoadBalancer {
		return
	}
	if p := spec.HealthCheckNodePort; p > 0 && p <= 65535 {
		t.res.HealthCheckNodePort = uint16(p)
		return
	}
	t.problem("spec.healthCheckNodePort", "%d is not a port; externalTrafficPolicy Local needs one for load-balancer health checks", spec.HealthCheckNodePort)
}

func (t *translation) readAffinity() time.Duration {
	spec := &t.svc.Spec
	if spec.SessionAffinity != corev1.ServiceAffinityClientIP {
		return 0
	}
	secs := int32(defaultAffinitySeconds)
	if c := spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
		secs = *c.ClientIP.TimeoutSeconds
	}
	if secs < 1 || secs > maxAffinitySeconds {
		t.problem("spec.sessionAffinityConfig.clientIP.timeoutSeconds", "%d is out of range 1-%d; using %d", secs, maxAffinitySeconds, defaultAffinitySeconds)
		secs = defaultAffinitySeconds
	}
	return time.Duration(secs) * time.Second
}

// vip is one service address and the field it came from.
type vip struct {
	addr  netip.Addr
	typ   loadbalancer.FrontendType
	field string
}

// readVIPs collects the IPv4 ClusterIPs, externalIPs and load-balancer
// ingress IPs. IPv6 ones are noted and left out, as kube-proxy's IPv4
// proxier does (it only logs them: dual-stack Services have them normally).
func (t *translation) readVIPs() {
	spec := &t.svc.Spec
	for i, s := range clusterIPStrings(spec) {
		t.clusterIPs = t.appendVIP(t.clusterIPs, s, loadbalancer.ClusterIP, fmt.Sprintf("spec.clusterIPs[%d]", i))
	}
	for i, s := range spec.ExternalIPs {
		t.external = t.appendVIP(t.external, s, loadbalancer.ExternalIP, fmt.Sprintf("spec.externalIPs[%d]", i))
	}
	for i, ing := range t.svc.Status.LoadBalancer.Ingress {
		field := fmt.Sprintf("status.loadBalancer.ingress[%d]", i)
		switch {
		case ing.IP == "":
			continue // hostname-only ingress: nothing to capture on this node
		case ing.IPMode != nil && *ing.IPMode == corev1.LoadBalancerIPModeProxy:
			// The load balancer proxies to node ports itself; capturing its
			// IP here would bypass it (kube-proxy's proxyutil.IsVIPMode).
			t.note(field+".ipMode", "Proxy: %s is left to the load balancer", ing.IP)
			continue
		}
		t.external = t.appendVIP(t.external, ing.IP, loadbalancer.LoadBalancer, field+".ip")
	}
}

func (t *translation) appendVIP(out []vip, s string, typ loadbalancer.FrontendType, field string) []vip {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		t.problem(field, "%q is not an IP address", s)
	case !a.Is4():
		t.note(field, "IPv6 address %s is not programmed (fastpath is IPv4 only)", a)
	case a.IsUnspecified() || a.IsMulticast():
		t.problem(field, "%s is not a unicast address", a)
	default:
		return append(out, vip{addr: a, typ: typ, field: field})
	}
	return out
}

// nodePortAddrs are the node's IPv4 addresses NodePort frontends listen on.
func (t *translation) nodePortAddrs() []netip.Addr {
	var out []netip.Addr
	for _, a := range t.node.Addresses {
		a = a.Unmap()
		if a.Is4() && inAny(t.node.NodePortCIDRs, a) && !containsAddr(out, a) {
			out = append(out, a)
		}
	}
	return out
}

func inAny(cidrs []netip.Prefix, a netip.Addr) bool {
	if len(cidrs) == 0 {
		return true
	}
	for _, p := range cidrs {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func containsAddr(list []netip.Addr, a netip.Addr) bool {
	for _, b := range list {
		if a == b {
			return true
		}
	}
	return false
}
