// Package loadbalancer is the load-balancer control plane: a table of desired
// services (plain Go, filled by sources such as the Kubernetes watcher or the
// standalone services file) and a reconciler that turns the table's changes
// into the fewest safe writes to the services, backends and rev_nat maps.
package loadbalancer

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
)

// ServiceName names a service the way Kubernetes does.
type ServiceName struct {
	Namespace string
	Name      string
}

func (n ServiceName) String() string { return n.Namespace + "/" + n.Name }

// Proto is an L4 protocol; its value is the IP protocol number the maps use.
type Proto uint8

const (
	TCP  = Proto(lbmap.ProtoTCP)
	UDP  = Proto(lbmap.ProtoUDP)
	SCTP = Proto(lbmap.ProtoSCTP)
)

func (p Proto) String() string { return lbmap.ProtoName(uint8(p)) }

func (p Proto) valid() bool { return p == TCP || p == UDP || p == SCTP }

// L4Addr is an address, port and protocol.
type L4Addr struct {
	Addr  netip.Addr
	Port  uint16
	Proto Proto
}

func (a L4Addr) String() string {
	if !a.Addr.IsValid() {
		return fmt.Sprintf("(no address):%d/%s", a.Port, a.Proto)
	}
	return netip.AddrPortFrom(a.Addr, a.Port).String() + "/" + a.Proto.String()
}

// Scope says which traffic a frontend entry serves (lbmap.Scope*).
type Scope uint8

const (
	ScopeExternal = Scope(lbmap.ScopeExternal)
	ScopeInternal = Scope(lbmap.ScopeInternal)
)

// FrontendType is the kind of Service address a frontend comes from. It only
// sets flags in the service entry; it is not part of the map key.
type FrontendType uint8

const (
	ClusterIP FrontendType = iota
	NodePort
	ExternalIP
	LoadBalancer
)

func (t FrontendType) String() string {
	switch t {
	case ClusterIP:
		return "ClusterIP"
	case NodePort:
		return "NodePort"
	case ExternalIP:
		return "ExternalIP"
	case LoadBalancer:
		return "LoadBalancer"
	}
	return fmt.Sprintf("FrontendType(%d)", uint8(t))
}

func (t FrontendType) flags() uint16 {
	switch t {
	case NodePort:
		return lbmap.ServiceNodePort
	case ExternalIP:
		return lbmap.ServiceExternalIP
	case LoadBalancer:
		return lbmap.ServiceLoadBalancer
	}
	return 0
}

// Frontend is one address a service is reached at. Two frontends with the
// same L4Addr and Scope are the same map entry, whatever their Type.
type Frontend struct {
	L4Addr
	Scope Scope
	Type  FrontendType
}

func (f Frontend) String() string {
	if f.Scope == ScopeInternal {
		return f.L4Addr.String() + " internal"
	}
	return f.L4Addr.String()
}

// BackendState mirrors lbmap.Backend* states.
type BackendState uint8

const (
	Active      = BackendState(lbmap.BackendActive)
	Terminating = BackendState(lbmap.BackendTerminating)
	Quarantined = BackendState(lbmap.BackendQuarantined)
)

func (s BackendState) String() string {
	switch s {
	case Active:
		return "active"
	case Terminating:
		return "terminating"
	case Quarantined:
		return "quarantined"
	}
	return fmt.Sprintf("state-%d", uint8(s))
}

// Backend is one place a frontend sends connections to.
type Backend struct {
	L4Addr
	State BackendState
}

// FrontendSpec is a frontend and the backends it spreads new connections
// over. Backends is written to slots 1..n exactly as given: the source
// filters and orders it (see SelectBackends).
type FrontendSpec struct {
	Frontend
	Backends []Backend
	// AffinityTimeout is zero for no session affinity, otherwise a whole
	// number of seconds (the map holds seconds in 32 bits).
	AffinityTimeout time.Duration
	// ExtLocal is externalTrafficPolicy: Local: traffic from outside the
	// node keeps its source address (no masquerade), and Backends holds
	// only this node's endpoints.
	ExtLocal bool
	// SourceRanges are loadBalancerSourceRanges: when not empty, new flows
	// are taken only from sources inside one of them (IPv4 prefixes).
	SourceRanges []netip.Prefix
}

// Service is everything one service wants programmed.
type Service struct {
	Name      ServiceName
	Frontends []FrontendSpec
}

// SelectBackends returns the backends a frontend should use for new
// connections, in the given order: the active ones; if there are none, the
// terminating ones, so a service whose pods are all shutting down keeps
// serving until they are gone (kube-proxy's terminating-endpoints fallback).
// Quarantined backends are never selected. The input is not modified.
func SelectBackends(all []Backend) []Backend {
	out := pick(all, Active)
	if len(out) == 0 {
		out = pick(all, Terminating)
	}
	return out
}

func pick(all []Backend, state BackendState) []Backend {
	var out []Backend
	for _, b := range all {
		if b.State == state {
			out = append(out, b)
		}
	}
	return out
}
