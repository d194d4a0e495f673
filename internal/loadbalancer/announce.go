package loadbalancer

import (
	"net/netip"
	"slices"
)

// AnnounceableIPs are the LoadBalancer ingress addresses of svc this node
// may announce to the network (ARP in internal/l2announce, BGP in
// internal/bgp): those whose frontend has a ready backend to send to. For
// externalTrafficPolicy: Local the source puts only this node's endpoints
// in Backends, so that means a ready local endpoint, as MetalLB requires;
// for Cluster, a ready endpoint anywhere. externalIPs are not announced:
// an address someone typed into the Service is routed by its owner.
func AnnounceableIPs(svc Service) []netip.Addr {
	var out []netip.Addr
	for _, fe := range svc.Frontends {
		if fe.Type != LoadBalancer || fe.Scope != ScopeExternal {
			continue
		}
		if !slices.ContainsFunc(fe.Backends, func(b Backend) bool { return b.State == Active }) {
			continue
		}
		if !slices.Contains(out, fe.Addr) {
			out = append(out, fe.Addr)
		}
	}
	return out
}

// Announceable is the IPs each Service lets this node announce, kept up to
// date from a source's batches.
type Announceable map[ServiceName][]netip.Addr

// Apply takes one batch; full replaces everything known.
func (e Announceable) Apply(full bool, upserted []Service, deleted []ServiceName) {
	if full {
		clear(e)
	}
	for _, svc := range upserted {
		if ips := AnnounceableIPs(svc); len(ips) > 0 {
			e[svc.Name] = ips
		} else {
			delete(e, svc.Name)
		}
	}
	for _, name := range deleted {
		delete(e, name)
	}
}

// IPs is the union of the addresses keep accepts: a shared IP is
// announceable when any of its Services is.
func (e Announceable) IPs(keep func(netip.Addr) bool) map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	for _, ips := range e {
		for _, ip := range ips {
			if keep(ip) {
				out[ip] = true
			}
		}
	}
	return out
}
