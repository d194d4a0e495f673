package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/fastpath-net/fastpath/internal/nettopo"
)

// tcpCounters are the kernel's TCP counters (TcpExt in /proc/net/netstat)
// that explain a drop in connection rate, summed over every namespace of
// the benchmark. Only one mode runs at a time, so a difference across one
// run belongs to that mode.
var tcpCounters = []string{
	"TCPSynRetrans", // client SYNs sent again: each costs the 1 s initial RTO
	"PAWSTimewait",  // SYNs a TIME_WAIT socket dropped for an old timestamp
	"TWRecycled",    // TIME_WAIT sockets a new connection took over
}

func (e *benchEnv) namespaces() []*nettopo.NS {
	out := []*nettopo.NS{e.star.Node}
	for _, h := range e.star.Hosts {
		out = append(out, h.NS)
	}
	return out
}

// tcpStats sums tcpCounters over the benchmark's namespaces.
func (e *benchEnv) tcpStats() (map[string]uint64, error) {
	sum := map[string]uint64{}
	for _, ns := range e.namespaces() {
		var data []byte
		// /proc/thread-self/net shows the namespace of the reading thread.
		err := ns.Do(func() (err error) {
			data, err = os.ReadFile("/proc/thread-self/net/netstat")
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("netstat of %s: %w", ns.Name, err)
		}
		vals, err := parseNetstat(string(data), "TcpExt:")
		if err != nil {
			return nil, fmt.Errorf("netstat of %s: %w", ns.Name, err)
		}
		for _, c := range tcpCounters {
			sum[c] += vals[c]
		}
	}
	return sum, nil
}

// parseNetstat reads one section of /proc/net/netstat: a line of names and
// a line of values, both starting with prefix.
func parseNetstat(data, prefix string) (map[string]uint64, error) {
	var lines [][]string
	for _, l := range strings.Split(data, "\n") {
		if strings.HasPrefix(l, prefix) {
			lines = append(lines, strings.Fields(l)[1:])
		}
	}
	if len(lines) != 2 || len(lines[0]) != len(lines[1]) {
		return nil, fmt.Errorf("no %s section", prefix)
	}
	out := map[string]uint64{}
	for i, name := range lines[0] {
		v, err := strconv.ParseUint(lines[1][i], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", prefix, name, err)
		}
		out[name] = v
	}
	return out, nil
}
