package loadbalancer

import (
	"net/netip"

	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
)

// GoneBackend is a UDP backend that left a frontend. kube-proxy deletes the
// conntrack entries of UDP flows to an endpoint that left a Service: with
// no connection to end, a client that keeps sending from one port would
// otherwise follow its flow's entry to the old endpoint for as long as it
// sends. fastpath's ct entries hold the backend for the same reason
// (established flows keep their backend), so the agent deletes the entries
// of such flows (ctmap.FlushGone) after the sync that removed the backend.
type GoneBackend struct {
	Frontend netip.AddrPort // VIP:port of the frontend, UDP
	Backend  netip.AddrPort
}

// noteGoneUDP records, for a UDP frontend being committed, the backends
// of its last plan (old) that its new plan no longer has. Linear in both:
// the new backends are marked with a fresh epoch first.
func (r *Reconciler) noteGoneUDP(st *frontendState, old []want) {
	if !r.opts.TrackGoneUDP || st.key.Proto != lbmap.ProtoUDP || len(old) == 0 {
		return
	}
	r.mark++
	for _, w := range st.wants {
		w.e.mark = r.mark
	}
	fe := netip.AddrPortFrom(st.key.Addr.IP(), st.key.Port)
	for _, w := range old {
		if w.e.mark != r.mark {
			r.gone = append(r.gone, GoneBackend{Frontend: fe, Backend: netip.AddrPortFrom(w.e.key.addr.IP(), w.e.key.port)})
		}
	}
}

// TakeGoneUDP returns the UDP backends that left a frontend since the last
// call and that no entry of that frontend (either scope) has again, and
// forgets them. A backend that only moved between an externalTrafficPolicy
// Local frontend's two entries has not left the Service.
func (r *Reconciler) TakeGoneUDP() []GoneBackend {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []GoneBackend
	for _, g := range r.gone {
		if !r.frontendHas(g) && !containsGone(out, g) {
			out = append(out, g)
		}
	}
	clear(r.gone)
	r.gone = r.gone[:0]
	return out
}

func (r *Reconciler) frontendHas(g GoneBackend) bool {
	key := lbmap.ServiceKey{Addr: lbmap.AddrFrom(g.Frontend.Addr()), Port: g.Frontend.Port(), Proto: lbmap.ProtoUDP}
	be := backendKey{addr: lbmap.AddrFrom(g.Backend.Addr()), port: g.Backend.Port(), proto: lbmap.ProtoUDP}
	for _, scope := range []uint8{lbmap.ScopeExternal, lbmap.ScopeInternal} {
		key.Scope = scope
		if st := r.fes[key]; st != nil {
			for _, w := range st.wants {
				if w.e.key == be {
					return true
				}
			}
		}
	}
	return false
}

func containsGone(list []GoneBackend, g GoneBackend) bool {
	for _, x := range list {
		if x == g {
			return true
		}
	}
	return false
}
