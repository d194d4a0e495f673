package ctmap

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfmap"
)

// Twin returns the key of the other direction of the same flow. A FORWARD
// entry's NAT address is the backend; a REPLY entry's is the frontend. In a
// flow with SNAT, the client's side of the REPLY key is the FORWARD entry's
// SNAT address and port (the masquerade address, or the client's own
// address with a port of its own), and the REPLY entry's SNAT address and
// port are the client.
func Twin(k Key, e Entry) Key {
	snat := e.Flags&SNAT != 0
	if k.Dir == Forward {
		r := Key{SAddr: e.NatAddr, DAddr: k.SAddr, SPort: e.NatPort, DPort: k.SPort, Proto: k.Proto, Dir: Reply}
		if snat {
			r.DAddr, r.DPort = e.SnatAddr, e.SnatPort
		}
		return r
	}
	f := Key{SAddr: k.DAddr, DAddr: e.NatAddr, SPort: k.DPort, DPort: e.NatPort, Proto: k.Proto, Dir: Forward}
	if snat {
		f.SAddr, f.SPort = e.SnatAddr, e.SnatPort
	}
	return f
}

// GC deletes the expired entries (before now, CLOCK_BOOTTIME ns) of flows
// that are no more and returns how many it deleted. Each direction ages
// only on its own packets, so a flow that is quiet one way (a UDP stream, a
// download) must not lose that direction alone: an expired entry stays
// while its flow is open, which is what the datapath asks too
// (fp_ct_twin_state in bpf/include/ct.h): its twin exists, is its own (the
// twin's twin is the entry: a tuple balanced again since leaves the old
// reply entry over), has not expired, and the flow has not closed in both
// directions. The last rule lets a closed flow's forward entry go after its
// short close lifetime while the reply entry stays through the backend's
// TIME_WAIT, the tombstone that makes the datapath give a new flow that
// would reuse the backend's tuple a port of its own.
//
// It keeps only the expired entries in memory, not a copy of the map: the
// ct map is the largest the agent reads, and GC runs every few seconds.
func GC(m bpfmap.Map[Key, Entry], now uint64) (int, error) {
	type entry struct {
		k Key
		v Entry
	}
	var candidates []entry
	err := m.Range(func(k Key, v Entry) bool {
		if v.Expires < now {
			candidates = append(candidates, entry{k, v})
		}
		return true
	})
	if err != nil {
		return 0, err
	}
	lookup := func(k Key) (Entry, bool) {
		v, ok, err := m.Lookup(k)
		return v, ok && err == nil
	}
	var expired []Key
	for _, c := range candidates {
		if !flowOpen(c.k, c.v, lookup, now) {
			expired = append(expired, c.k)
		}
	}
	if err := m.Delete(expired); err != nil {
		return 0, fmt.Errorf("ct gc: %w", err)
	}
	return len(expired), nil
}

// Now is CLOCK_BOOTTIME in nanoseconds, the clock the datapath stamps
// entries with (bpf_ktime_get_boot_ns), so suspend does not expire flows.
func Now() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	return uint64(ts.Nano())
}

// flowOpen reports whether the flow of entry v at k is open, as GC explains.
func flowOpen(k Key, v Entry, lookup func(Key) (Entry, bool), now uint64) bool {
	tk := Twin(k, v)
	twin, ok := lookup(tk)
	return ok && Twin(tk, twin) == k && twin.Expires >= now && v.Flags&twin.Flags&Closing == 0
}
