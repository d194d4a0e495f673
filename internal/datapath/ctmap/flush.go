package ctmap

import (
	"fmt"
	"net/netip"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfmap"
	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
)

// Pair is a frontend (VIP:port) and one backend, of one protocol.
type Pair struct {
	Frontend netip.AddrPort
	Backend  netip.AddrPort
	Proto    uint8
}

// FlushPairs deletes both entries of every flow from a pair's frontend to
// its backend, as kube-proxy deletes the conntrack entries of UDP flows to
// an endpoint that left a Service, and returns how many entries it deleted.
// The next packet of such a flow is balanced again, to a backend that is
// still there. It walks the map once, whatever the number of pairs; there
// is no index by backend. A FORWARD entry matches by its key's destination
// (the frontend) and its NAT address (the backend); a REPLY entry by its
// key's source (the backend) and its NAT address (the frontend).
func FlushPairs(m bpfmap.Map[Key, Entry], pairs []Pair) (int, error) {
	if len(pairs) == 0 {
		return 0, nil
	}
	type end struct {
		addr lbmap.Addr
		port uint16
	}
	type pairKey struct {
		fe, be end
		proto  uint8
	}
	want := make(map[pairKey]bool, len(pairs))
	for _, p := range pairs {
		want[pairKey{
			fe:    end{lbmap.AddrFrom(p.Frontend.Addr().Unmap()), p.Frontend.Port()},
			be:    end{lbmap.AddrFrom(p.Backend.Addr().Unmap()), p.Backend.Port()},
			proto: p.Proto,
		}] = true
	}
	var dels []judged
	err := m.Range(func(k Key, v Entry) bool {
		pk := pairKey{proto: k.Proto}
		if k.Dir == Forward {
			pk.fe, pk.be = end{k.DAddr, k.DPort}, end{v.NatAddr, v.NatPort}
		} else {
			pk.fe, pk.be = end{v.NatAddr, v.NatPort}, end{k.SAddr, k.SPort}
		}
		// Both entries of a flow match, each on its own: a twin is not
		// deleted by key, as its tuple may belong to a newer flow by now.
		if want[pk] {
			dels = append(dels, judged{k, v})
		}
		return true
	})
	if err != nil {
		return 0, fmt.Errorf("ct flush: %w", err)
	}
	// As GC does: a key may hold a new flow's entry by the time the walk
	// ends (a tuple whose entry was evicted, balanced again to a backend
	// still there), and deleting by key alone would take that flow's.
	var res GCResult
	for _, j := range dels {
		if err := deleteUnchanged(m, j, &res); err != nil {
			return res.Deleted, fmt.Errorf("ct flush: %w", err)
		}
	}
	return res.Deleted, nil
}
