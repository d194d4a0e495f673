package svctranslate

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// ControllerName is the managed-by value of the slices the EndpointSlice
// controller makes for Services with a selector. Other slices are made by
// hand (or mirrored from hand-made Endpoints), so their mistakes are the
// user's and are reported.
const ControllerName = "endpointslice-controller.k8s.io"

// endpoint is one endpoint of a slice as kube-proxy reads it
// (endpointslicecache.go): the first address, and conditions where nil
// ready and serving mean true and nil terminating means false.
type endpoint struct {
	addr        netip.Addr
	local       bool
	ready       bool
	serving     bool
	terminating bool
	zoneHints   []string
	nodeHints   []string
}

// target is an endpoint with the port one service port resolves to on it.
type target struct {
	endpoint
	port uint16
}

// portKey is how kube-proxy matches slice ports to service ports: by name
// and protocol. Slices carry the number each targetPort resolved to, so a
// named targetPort can differ per endpoint.
type portKey struct {
	name  string
	proto corev1.Protocol
}

// targets holds a service port's endpoints by address and port, deduplicated.
type targets map[netip.AddrPort]target

// collect reads the Service's IPv4 slices, in name order so the result does
// not depend on the order they were given in.
func (t *translation) collect(all []*discoveryv1.EndpointSlice) map[portKey]targets {
	out := map[portKey]targets{}
	wanted := t.servicePorts()
	for _, s := range t.ownSlices(all) {
		eps := t.sliceEndpoints(s)
		for i := range s.Ports {
			key, num, ok := t.slicePort(s, i, wanted)
			if !ok {
				continue
			}
			if out[key] == nil {
				out[key] = targets{}
			}
			for _, ep := range eps {
				out[key].merge(target{endpoint: ep, port: num})
			}
		}
	}
	return out
}

func (t *translation) servicePorts() map[portKey]bool {
	m := map[portKey]bool{}
	for _, p := range t.svc.Spec.Ports {
		m[portKey{name: p.Name, proto: protoOrTCP(p.Protocol)}] = true
	}
	return m
}

// ownSlices keeps the IPv4 slices labelled with the Service's name in its
// namespace. IPv6 slices are the other half of a dual-stack Service and FQDN
// slices have no address to send to: kube-proxy's IPv4 proxier skips both.
func (t *translation) ownSlices(all []*discoveryv1.EndpointSlice) []*discoveryv1.EndpointSlice {
	var out []*discoveryv1.EndpointSlice
	for _, s := range all {
		if s.Namespace == t.svc.Namespace && s.Labels[discoveryv1.LabelServiceName] == t.svc.Name &&
			s.AddressType == discoveryv1.AddressTypeIPv4 {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b *discoveryv1.EndpointSlice) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// merge keeps one target per address and port when slices overlap (an
// endpoint moving between slices). kube-proxy keeps the first it meets
// unless a later one is local, and meets them in map order; here the choice
// is the local one, then the most usable one, so it never depends on order.
func (m targets) merge(tg target) {
	key := netip.AddrPortFrom(tg.addr, tg.port)
	old, ok := m[key]
	if !ok || (tg.local && !old.local) || (tg.local == old.local && tg.rank() > old.rank()) {
		m[key] = tg
	}
}

// rank orders conditions by usefulness: ready, then serving and terminating.
func (ep endpoint) rank() int {
	switch {
	case ep.ready:
		return 2
	case ep.serving && ep.terminating:
		return 1
	}
	return 0
}

// sorted returns the targets by address, then port: a stable slot order
// that does not move when endpoints move between slices.
func (m targets) sorted() []target {
	out := make([]target, 0, len(m))
	for _, tg := range m {
		out = append(out, tg)
	}
	slices.SortFunc(out, func(a, b target) int {
		return cmp.Or(a.addr.Compare(b.addr), cmp.Compare(a.port, b.port))
	})
	return out
}

// slicePort resolves s.Ports[i] to the service port it serves and its number.
func (t *translation) slicePort(s *discoveryv1.EndpointSlice, i int, wanted map[portKey]bool) (portKey, uint16, bool) {
	p := s.Ports[i]
	key := portKey{proto: corev1.ProtocolTCP} // the apiserver's defaults for nil
	if p.Name != nil {
		key.name = *p.Name
	}
	if p.Protocol != nil {
		key.proto = *p.Protocol
	}
	field := fmt.Sprintf("ports[%d]", i)
	switch {
	case p.Port == nil || *p.Port == 0:
		// The API allows it, meaning "all ports"; kube-proxy ignores such a
		// port (a TODO there) and so does the datapath, which needs a number.
		t.sliceProblem(s, field+".port", "missing: the endpoints of port %q need a port number", key.name)
		return key, 0, false
	case *p.Port < 0 || *p.Port > 65535:
		t.sliceProblem(s, field+".port", "%d is out of range 1-65535", *p.Port)
		return key, 0, false
	case !wanted[key] && s.Labels[discoveryv1.LabelManagedBy] != ControllerName:
		t.sliceProblem(s, field, "no port of Service %s is named %q with protocol %s; these endpoints serve nothing", t.svc.Name, key.name, key.proto)
		return key, 0, false
	}
	return key, uint16(*p.Port), wanted[key]
}

// sliceEndpoints reads the usable addresses of a slice. An endpoint that is
// neither ready nor serving is kept: it counts in the topology decision's
// "every ready endpoint has hints" only through readiness, and is never
// chosen (select.go).
func (t *translation) sliceEndpoints(s *discoveryv1.EndpointSlice) []endpoint {
	out := make([]endpoint, 0, len(s.Endpoints))
	for j := range s.Endpoints {
		e := &s.Endpoints[j]
		field := fmt.Sprintf("endpoints[%d].addresses", j)
		if len(e.Addresses) == 0 {
			t.sliceProblem(s, field, "empty")
			continue
		}
		a, err := netip.ParseAddr(e.Addresses[0])
		switch {
		case err != nil || !a.Is4():
			t.sliceProblem(s, field+"[0]", "%q is not an IPv4 address", e.Addresses[0])
			continue
		case a.IsUnspecified() || a.IsMulticast():
			t.sliceProblem(s, field+"[0]", "%s is not a unicast address", a)
			continue
		}
		out = append(out, t.endpointOf(a, e))
	}
	return out
}

func (t *translation) endpointOf(a netip.Addr, e *discoveryv1.Endpoint) endpoint {
	c := e.Conditions
	ep := endpoint{
		addr:        a,
		local:       e.NodeName != nil && t.node.Name != "" && *e.NodeName == t.node.Name,
		ready:       c.Ready == nil || *c.Ready,
		serving:     c.Serving == nil || *c.Serving,
		terminating: c.Terminating != nil && *c.Terminating,
	}
	if h := e.Hints; h != nil {
		for _, z := range h.ForZones {
			ep.zoneHints = append(ep.zoneHints, z.Name)
		}
		for _, n := range h.ForNodes {
			ep.nodeHints = append(ep.nodeHints, n.Name)
		}
	}
	if len(ep.zoneHints) > 0 {
		t.res.UsesZone = true
	}
	return ep
}

func (t *translation) sliceProblem(s *discoveryv1.EndpointSlice, field, format string, args ...any) {
	ref := corev1.ObjectReference{Kind: "EndpointSlice", APIVersion: "discovery.k8s.io/v1", Namespace: s.Namespace, Name: s.Name, UID: s.UID}
	t.res.Problems = append(t.res.Problems, Problem{Object: ref, Field: field, Message: fmt.Sprintf(format, args...)})
}

func protoOrTCP(p corev1.Protocol) corev1.Protocol {
	if p == "" {
		return corev1.ProtocolTCP
	}
	return p
}
