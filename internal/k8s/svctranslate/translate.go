// Package svctranslate turns one Kubernetes Service, its EndpointSlices and
// this node's facts into the loadbalancer.Service the node programs, with
// kube-proxy's semantics (pkg/proxy: serviceport.go, endpointslicecache.go,
// topology.go). It is pure: no API calls, no clock, no globals, so every
// rule is checked by golden tests (testdata/*.txtar).
//
// Scopes. A frontend's backends depend on where the packet comes from only
// for external frontends (NodePort, LoadBalancer, ExternalIP) of a Service
// with externalTrafficPolicy Local. kube-proxy sends traffic from outside the
// node to node-local endpoints only, and traffic that starts on this node (a
// pod or the host itself) to the cluster-wide endpoints ("short-circuit",
// UsesClusterEndpoints in serviceport.go). Such a frontend becomes two
// entries:
//
//	ScopeExternal: the local endpoints, for packets from outside the node;
//	ScopeInternal: the cluster endpoints, for packets from this node.
//
// Every other frontend is one ScopeExternal entry, whatever the source of the
// packet: ClusterIP frontends carry the internalTrafficPolicy's set (local
// endpoints with Local), which kube-proxy applies to all traffic to a
// ClusterIP; external frontends with policy Cluster carry the cluster set.
// Both entries of an ETP=Local frontend are emitted even when the two sets are
// equal at the moment, so an endpoint moving between nodes never creates or
// deletes map entries (and the rev-NAT IDs that established flows hold).
//
// Packets that start on this node get ScopeInternal where it exists and
// ScopeExternal otherwise; packets from outside get ScopeExternal only. The
// datapath finds a ScopeInternal entry through its ScopeExternal twin (the
// loadbalancer table flags the twin and refuses an internal frontend without
// one), which the pairing above always provides.
package svctranslate

import (
	"fmt"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/fastpath-net/fastpath/internal/loadbalancer"
)

// Labels kube-proxy's informers exclude (cmd/kube-proxy/app/server.go): a
// Service another proxy implements, and the headless marker the EndpointSlice
// controller copies onto slices.
const (
	LabelServiceProxyName = "service.kubernetes.io/service-proxy-name"
	LabelHeadless         = "service.kubernetes.io/headless"
)

// Node is what a translation needs to know about the node it runs for.
type Node struct {
	Name string // endpoints with this nodeName are local
	Zone string // the Node's topology.kubernetes.io/zone label
	// Addresses are the node's InternalIP and ExternalIP addresses, in the
	// Node's order; NodePort frontends listen on the IPv4 ones.
	Addresses []netip.Addr
	// NodePortCIDRs is --nodeport-addresses: when not empty, only Addresses
	// inside one of them get NodePort frontends.
	NodePortCIDRs []netip.Prefix
	// ProxyName is --service-proxy-name: "" serves the Services without
	// the service-proxy-name label, as kube-proxy; a name serves only the
	// Services whose label equals it.
	ProxyName string
}

// Result is one Service's translation.
type Result struct {
	Service loadbalancer.Service
	// Skipped says why nothing of the Service is programmed (headless,
	// ExternalName, no IPv4 ClusterIP, ...); "" when it is.
	Skipped string
	// HealthCheckNodePort is spec.healthCheckNodePort of a LoadBalancer
	// Service with externalTrafficPolicy Local, for the health server.
	HealthCheckNodePort uint16
	// UsesNodeAddresses: some port has a nodePort, so the frontends change
	// when the node's addresses do.
	UsesNodeAddresses bool
	// UsesZone: some endpoint has zone hints, so the backends may change
	// when the node's zone does.
	UsesZone bool
	// Problems are what the user asked for and is not programmed; each is
	// worth a Warning event on the object it names.
	Problems []Problem
	// Notes are deliberate omissions kube-proxy makes too (the IPv6 half of
	// a dual-stack Service, ipMode Proxy): logged, not evented.
	Notes []Problem
}

// Problem names an object, a field of it and what is wrong.
type Problem struct {
	Object  corev1.ObjectReference // Kind, Namespace, Name, UID
	Field   string                 // "spec.ports[1].protocol"
	Message string
}

func (p Problem) String() string {
	return fmt.Sprintf("%s %s/%s: %s: %s", p.Object.Kind, p.Object.Namespace, p.Object.Name, p.Field, p.Message)
}

// NameOf is the table's name for a Service.
func NameOf(svc *corev1.Service) loadbalancer.ServiceName {
	return loadbalancer.ServiceName{Namespace: svc.Namespace, Name: svc.Name}
}

// Translate computes what this node programs for svc. slices may hold any
// EndpointSlices: only IPv4 ones in svc's namespace whose
// kubernetes.io/service-name label names svc are used. Inputs are not
// modified.
func Translate(svc *corev1.Service, slices []*discoveryv1.EndpointSlice, node Node) Result {
	t := &translation{svc: svc, node: node}
	t.res.Service.Name = NameOf(svc)
	if reason := t.skipReason(); reason != "" {
		t.res.Skipped = reason
		return t.res
	}
	t.readPolicies()
	t.readVIPs()
	t.readSourceRanges()
	eps := t.collect(slices)
	t.seen = map[feKey]string{}
	for i := range svc.Spec.Ports {
		t.port(i, &svc.Spec.Ports[i], eps)
	}
	return t.res
}

// translation is the state of one Translate call.
type translation struct {
	svc  *corev1.Service
	node Node
	res  Result

	etpLocal, itpLocal bool
	affinity           time.Duration
	clusterIPs         []vip
	external           []vip // externalIPs then load-balancer IPs
	// sourceRanges filter the load-balancer frontends; nil: no filter.
	sourceRanges []netip.Prefix
	seen         map[feKey]string
}

func (t *translation) problem(field, format string, args ...any) {
	t.res.Problems = append(t.res.Problems, t.svcProblem(field, format, args...))
}

func (t *translation) note(field, format string, args ...any) {
	t.res.Notes = append(t.res.Notes, t.svcProblem(field, format, args...))
}

func (t *translation) svcProblem(field, format string, args ...any) Problem {
	ref := corev1.ObjectReference{Kind: "Service", APIVersion: "v1", Namespace: t.svc.Namespace, Name: t.svc.Name, UID: t.svc.UID}
	return Problem{Object: ref, Field: field, Message: fmt.Sprintf(format, args...)}
}
