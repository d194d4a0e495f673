// Package netstat reads the kernel's TCP counters (TcpExt in
// /proc/net/netstat) of the benchmarks' network namespaces: the counters
// that explain a falling connection rate, such as SYNs sent again or SYNs a
// TIME_WAIT socket refused.
package netstat

import (
	"fmt"

	"github.com/fastpath-net/fastpath/internal/nettopo"
)

// The counters the benchmarks report. A SYN that a backend's TIME_WAIT
// socket refuses for an old timestamp counts PAWSTimewait there (kernel
// 6.15 and later; TestTimeWaitRefusal shows which counters move on this
// kernel); the client's kernel answers the TIME_WAIT's ACK with a reset,
// which ends the TIME_WAIT, and counts its SYN sent again in TCPSynRetrans.
const (
	SynRetrans   = "TCPSynRetrans" // SYNs sent again, by the client
	PAWSTimewait = "PAWSTimewait"  // SYNs a TIME_WAIT socket refused for an old timestamp
	TWRecycled   = "TWRecycled"    // TIME_WAIT sockets a new connection took over
)

// Reported is the benchmarks' selection, in the order of their reports.
var Reported = []string{SynRetrans, PAWSTimewait, TWRecycled}

// Sum adds the counters names over the namespaces nss. A counter this
// kernel lacks is an error: a column of zeros would look like good news.
func Sum(nss []*nettopo.NS, names []string) (map[string]uint64, error) {
	sum := map[string]uint64{}
	for _, ns := range nss {
		vals, err := ns.TCPExt()
		if err != nil {
			return nil, err
		}
		for _, c := range names {
			v, ok := vals[c]
			if !ok {
				return nil, fmt.Errorf("netstat of %s: this kernel has no TcpExt %s", ns.Name, c)
			}
			sum[c] += v
		}
	}
	return sum, nil
}

// Diff is after - before, counter by counter (0 where a counter went
// back, as a per-CPU sum read mid-update can).
func Diff(after, before map[string]uint64) map[string]uint64 {
	d := make(map[string]uint64, len(after))
	for k, v := range after {
		if v >= before[k] {
			d[k] = v - before[k]
		} else {
			d[k] = 0
		}
	}
	return d
}
