package main

import (
	"github.com/fastpath-net/fastpath/internal/nettopo"
	"github.com/fastpath-net/fastpath/test/bench/internal/netstat"
)

func (e *benchEnv) namespaces() []*nettopo.NS {
	out := []*nettopo.NS{e.star.Node}
	for _, h := range e.star.Hosts {
		out = append(out, h.NS)
	}
	return out
}

// tcpStats sums the reported TCP counters (netstat.Reported) over the
// benchmark's namespaces. Only one mode runs at a time, so a difference
// across one run belongs to that mode.
func (e *benchEnv) tcpStats() (map[string]uint64, error) {
	return netstat.Sum(e.namespaces(), netstat.Reported)
}
