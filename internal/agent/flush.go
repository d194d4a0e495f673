package agent

import (
	"github.com/fastpath-net/fastpath/internal/datapath/ctmap"
	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
)

// flushGoneUDP deletes the ct entries of UDP flows whose backend the last
// sync removed from their frontend, as kube-proxy clears conntrack for
// endpoints that left a UDP Service: the next datagram is balanced again.
// One walk of the ct map per sync that removed any UDP backend. A failure
// is logged and not retried: the flows then keep their old backend until
// they go quiet, as before this existed.
func (a *Agent) flushGoneUDP() {
	gone := a.rec.TakeGoneUDP()
	if len(gone) == 0 {
		return
	}
	pairs := make([]ctmap.Pair, len(gone))
	for i, g := range gone {
		pairs[i] = ctmap.Pair{Frontend: g.Frontend, Backend: g.Backend, Proto: lbmap.ProtoUDP}
	}
	n, err := ctmap.FlushPairs(a.dp.CT, pairs)
	if err != nil {
		a.log.Error("deleting conntrack entries of removed UDP backends", "pairs", len(pairs), "error", err)
		return
	}
	a.log.Debug("deleted conntrack entries of removed UDP backends", "pairs", len(pairs), "entries", n)
}
