package l2announce

import (
	"net/netip"
	"slices"

	"github.com/fastpath-net/fastpath/internal/loadbalancer"
)

// eligibleIPs are the LoadBalancer ingress IPv4 addresses of svc this node
// may announce: those whose frontend has a ready backend to send to. For
// externalTrafficPolicy: Local the source puts only this node's endpoints
// in Backends, so that means a ready local endpoint, as MetalLB requires;
// for Cluster, a ready endpoint anywhere. externalIPs are not announced:
// an address someone typed into the Service is routed by its owner.
func eligibleIPs(svc loadbalancer.Service) []netip.Addr {
	var out []netip.Addr
	for _, fe := range svc.Frontends {
		if fe.Type != loadbalancer.LoadBalancer || fe.Scope != loadbalancer.ScopeExternal || !fe.Addr.Is4() {
			continue
		}
		if !slices.ContainsFunc(fe.Backends, func(b loadbalancer.Backend) bool { return b.State == loadbalancer.Active }) {
			continue
		}
		if !slices.Contains(out, fe.Addr) {
			out = append(out, fe.Addr)
		}
	}
	return out
}

// eligibility is the IPs each Service lets this node announce, kept up to
// date from the source's batches.
type eligibility map[loadbalancer.ServiceName][]netip.Addr

// apply takes one batch; full replaces everything known.
func (e eligibility) apply(full bool, upserted []loadbalancer.Service, deleted []loadbalancer.ServiceName) {
	if full {
		clear(e)
	}
	for _, svc := range upserted {
		if ips := eligibleIPs(svc); len(ips) > 0 {
			e[svc.Name] = ips
		} else {
			delete(e, svc.Name)
		}
	}
	for _, name := range deleted {
		delete(e, name)
	}
}

// ips is the union: a shared IP is eligible when any of its Services is.
func (e eligibility) ips() map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	for _, ips := range e {
		for _, ip := range ips {
			out[ip] = true
		}
	}
	return out
}
