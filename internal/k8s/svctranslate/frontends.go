package svctranslate

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"github.com/fastpath-net/fastpath/internal/loadbalancer"
)

// feKey is what makes two frontends one map entry.
type feKey struct {
	l4    loadbalancer.L4Addr
	scope loadbalancer.Scope
}

// port adds the frontends of spec.ports[i]: every ClusterIP, external IP and
// load-balancer IP on its port, and every NodePort address on its nodePort.
func (t *translation) port(i int, sp *corev1.ServicePort, eps map[portKey]targets) {
	field := fmt.Sprintf("spec.ports[%d]", i)
	proto, ok := protoOf(sp.Protocol)
	if !ok {
		t.problem(field+".protocol", "%q is not TCP, UDP or SCTP", sp.Protocol)
		return
	}
	if sp.Port < 1 || sp.Port > 65535 {
		t.problem(field+".port", "%d is out of range 1-65535", sp.Port)
		return
	}
	tgs := eps[portKey{name: sp.Name, proto: protoOrTCP(sp.Protocol)}].sorted()
	sets := backendSets{cluster: clusterBackends(tgs, t.node, proto), local: localBackends(tgs, proto)}
	internal := sets.cluster
	if t.itpLocal {
		internal = sets.local
	}
	for _, v := range t.clusterIPs {
		t.add(v, uint16(sp.Port), proto, loadbalancer.ScopeExternal, internal, field)
	}
	for _, v := range t.external {
		t.addExternal(v, uint16(sp.Port), proto, sets, field)
	}
	t.nodePorts(field, sp, proto, sets)
}

// backendSets are one port's backends per traffic policy.
type backendSets struct{ cluster, local []loadbalancer.Backend }

func (t *translation) nodePorts(field string, sp *corev1.ServicePort, proto loadbalancer.Proto, sets backendSets) {
	if sp.NodePort == 0 {
		// No nodePort: type ClusterIP, or LoadBalancer with
		// allocateLoadBalancerNodePorts false.
		return
	}
	t.res.UsesNodeAddresses = true
	if sp.NodePort < 1 || sp.NodePort > 65535 {
		t.problem(field+".nodePort", "%d is out of range 1-65535", sp.NodePort)
		return
	}
	for _, a := range t.nodePortAddrs() {
		v := vip{addr: a, typ: loadbalancer.NodePort, field: "node address " + a.String()}
		t.addExternal(v, uint16(sp.NodePort), proto, sets, field+".nodePort")
	}
}

// addExternal adds a NodePort, LoadBalancer or ExternalIP frontend. With
// externalTrafficPolicy Local it is two entries (see the package comment):
// the local set for traffic from outside, the cluster set for traffic from
// this node.
func (t *translation) addExternal(v vip, port uint16, proto loadbalancer.Proto, sets backendSets, field string) {
	if !t.etpLocal {
		t.add(v, port, proto, loadbalancer.ScopeExternal, sets.cluster, field)
		return
	}
	t.add(v, port, proto, loadbalancer.ScopeExternal, sets.local, field)
	t.add(v, port, proto, loadbalancer.ScopeInternal, sets.cluster, field)
}

// add appends one frontend unless the Service already has it: the table
// would refuse the whole Service for a duplicate, so the first one stays and
// the later one is reported.
func (t *translation) add(v vip, port uint16, proto loadbalancer.Proto, scope loadbalancer.Scope, bes []loadbalancer.Backend, portField string) {
	fe := loadbalancer.Frontend{L4Addr: loadbalancer.L4Addr{Addr: v.addr, Port: port, Proto: proto}, Scope: scope, Type: v.typ}
	where := v.field + " on " + portField
	key := feKey{l4: fe.L4Addr, scope: scope}
	if first, dup := t.seen[key]; dup {
		if scope == loadbalancer.ScopeExternal { // its internal twin would say the same again
			t.problem(v.field, "frontend %s (%s) is also %s; programmed once, as the first", fe.L4Addr, where, first)
		}
		return
	}
	t.seen[key] = where
	spec := loadbalancer.FrontendSpec{
		Frontend: fe, Backends: bes, AffinityTimeout: t.affinity,
		ExtLocal: t.etpLocal && v.typ != loadbalancer.ClusterIP && scope == loadbalancer.ScopeExternal,
	}
	// Only the load-balancer IPs are filtered, as in kube-proxy: NodePort,
	// ClusterIP and externalIPs of the same Service accept every source.
	if v.typ == loadbalancer.LoadBalancer {
		spec.SourceRanges = t.sourceRanges
	}
	t.res.Service.Frontends = append(t.res.Service.Frontends, spec)
}

func protoOf(p corev1.Protocol) (loadbalancer.Proto, bool) {
	switch protoOrTCP(p) {
	case corev1.ProtocolTCP:
		return loadbalancer.TCP, true
	case corev1.ProtocolUDP:
		return loadbalancer.UDP, true
	case corev1.ProtocolSCTP:
		return loadbalancer.SCTP, true
	}
	return 0, false
}
