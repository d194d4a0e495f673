package ctmap

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfmap"
)

// Twin returns the key of the other direction of the same flow. A FORWARD
// entry's NAT address is the backend; a REPLY entry's is the frontend. In a
// masqueraded flow, the client's side of the REPLY key is the masquerade
// address (the FORWARD entry's SNAT address), and the REPLY entry's SNAT
// address is the client.
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

// GC deletes the flows whose both directions expired before now
// (CLOCK_BOOTTIME ns) and returns how many entries it deleted. Each
// direction ages only on its own packets, so a flow that is quiet one way
// (a UDP stream, a download) must not lose that direction alone.
func GC(m bpfmap.Map[Key, Entry], now uint64) (int, error) {
	all, err := m.All()
	if err != nil {
		return 0, err
	}
	var expired []Key
	for k, v := range all {
		if v.Expires >= now {
			continue
		}
		if twin, ok := all[Twin(k, v)]; ok && twin.Expires >= now {
			continue
		}
		expired = append(expired, k)
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
