package ctmap

import (
	"errors"
	"fmt"
	"time"

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
// It holds at most gcChunk keys, never a copy of the map: the ct map is
// the largest the agent reads and GC runs every few seconds, so gathering
// every expired entry first (100,000+ at a few thousand connections a
// second with TIME_WAIT tombstones) grew the agent's heap by tens of MiB a
// pass. Each entry is judged as the walk reaches it and the dead ones are
// deleted in chunks behind the walk. Deleting a visited entry does not
// change a verdict still to come: a flow whose twin is gone is closed, the
// same verdict the expired twin would have given.
//
// A verdict is milliseconds old when its chunk is deleted, and meanwhile
// the datapath may have written the key anew: a client that reuses its
// port reuses the tuple, a new flow overwrites the closed flow's entries,
// and deleting by key alone then took the new flow's entry (its replies
// went out without reverse NAT, and its client retried into the same
// half-flow: a connection stuck for good, at the first N=1 leg after
// many Services in bench-datapath, where every tuple is reused within
// seconds of its entries expiring). So each key is looked up again right
// before its delete and kept unless it still holds the entry judged. The
// kernel has no compare-and-delete for BPF maps; the window left is the
// one between those two calls (about a microsecond, against the
// milliseconds of a chunk), and what falls into it is a new flow's first
// packet, which the datapath heals: a SYN sent again finds its missing
// REPLY entry written anew (fp_ct_heal_reply in bpf/include/ct.h).
// Taking the entry out and putting it back instead (lookup-and-delete,
// then insert) was worse: the entry is then missing while it is put back,
// and what is put back is a new flow's, whose next packet, a microsecond
// later, found no entry and was balanced anew.
func GC(m bpfmap.Map[Key, Entry], now uint64) (int, error) {
	r, err := Collect(m, now)
	return r.Deleted, err
}

// GCResult is what one GC walk did and saw.
type GCResult struct {
	Deleted int // expired entries of closed flows removed
	// Seen is the entries the walk found: the fill the map had before its
	// deletes, the one to judge an LRU map by (it evicts when full, so
	// the entries left after a walk say nothing of what the LRU did
	// since the last one).
	Seen int
	Live int // entries left: Seen less Deleted
	// Rewritten counts keys judged dead but written anew (or touched by a
	// packet) before their delete, and so kept.
	Rewritten int
}

// Collect is GC, also reporting the entries left.
func Collect(m bpfmap.Map[Key, Entry], now uint64) (GCResult, error) {
	return gc(m, now, gcChunk, nil)
}

// CollectPaced is Collect with a pause after each chunk of deletes: pause
// gets the time the chunk took and says whether to go on. A walk of a
// full map at thousands of new connections a second takes about a second
// of CPU; paced, it spreads over several and leaves the node's workloads
// their share. A walk pause ends is incomplete: ErrStopped.
func CollectPaced(m bpfmap.Map[Key, Entry], now uint64, pause func(busy time.Duration) bool) (GCResult, error) {
	return gc(m, now, gcChunk, pause)
}

// ErrStopped says a paced walk ended early, at its pause's word.
var ErrStopped = errors.New("ct gc stopped before the end of the map")

// gcChunk bounds the entries GC holds judged before it deletes them (one
// lookup and one delete each) and, paced, the work between two pauses.
const gcChunk = 1024

func gc(m bpfmap.Map[Key, Entry], now uint64, chunk int, pause func(time.Duration) bool) (GCResult, error) {
	lookup := func(k Key) (Entry, bool) {
		v, ok, err := m.Lookup(k)
		return v, ok && err == nil
	}
	pending := make([]judged, 0, chunk)
	var res GCResult
	visited := 0
	var delErr error
	stopped := false
	began := time.Now()
	flush := func() bool {
		for _, j := range pending {
			if delErr = deleteUnchanged(m, j, &res); delErr != nil {
				return false
			}
		}
		pending = pending[:0]
		return true
	}
	err := m.Range(func(k Key, v Entry) bool {
		// Flushing before k joins pending keeps k, the key a one-by-one
		// walk asks the kernel for the successor of, in the map: deleting
		// it would make the walk start over from the first key.
		if len(pending) >= chunk {
			if !flush() {
				return false
			}
			if pause != nil && !pause(time.Since(began)) {
				stopped = true
				return false
			}
			began = time.Now()
		}
		visited++
		if v.Expires < now && !flowOpen(k, v, lookup, now) {
			pending = append(pending, judged{k, v})
		}
		return true
	})
	if err == nil && delErr == nil {
		flush()
	}
	res.Seen = visited
	res.Live = visited - res.Deleted
	if delErr != nil {
		return res, fmt.Errorf("ct gc: %w", delErr)
	}
	if err == nil && stopped {
		err = ErrStopped
	}
	return res, err
}

// judged is an entry found dead, as the walk saw it.
type judged struct {
	k Key
	v Entry
}

// deleteUnchanged deletes j's key if it still holds the entry judged:
// otherwise a new flow has written it, or a packet has just touched it.
func deleteUnchanged(m bpfmap.Map[Key, Entry], j judged, res *GCResult) error {
	v, ok, err := m.Lookup(j.k)
	if err != nil || !ok {
		return err
	}
	if v != j.v {
		res.Rewritten++
		return nil
	}
	if err := m.Delete([]Key{j.k}); err != nil {
		return err
	}
	res.Deleted++
	return nil
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
