package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/fastpath-net/fastpath/internal/datapath/ctmap"
)

// Conntrack sizing from node memory, as Cilium's
// --bpf-map-dynamic-size-ratio: fp_ct holds every load-balanced and
// masqueraded flow (it is also the NAT table: a masqueraded flow's REPLY
// entry is its port reservation), so its size follows what the node can
// carry, within bounds.
const (
	// DefaultCTMemoryRatio is the share of the node's RAM fp_ct may take
	// (Cilium's default ratio, 0.0025, for its CT, NAT and neighbour maps).
	DefaultCTMemoryRatio = 0.0025
	// CTMinEntries and CTMaxEntries bound a derived size: the floor keeps a
	// small node serving 64k connections (two entries each), the ceiling is
	// Cilium's map size limit.
	CTMinEntries = 1 << 17
	CTMaxEntries = 1 << 24
	// ctEntryOverhead is the kernel's per-element cost of an LRU hash beyond
	// key and value (struct htab_elem and the LRU node, rounded up).
	ctEntryOverhead = 64
)

// CTEntryBytes is the memory one fp_ct entry costs the kernel, about.
var CTEntryBytes = binary.Size(ctmap.Key{}) + binary.Size(ctmap.Entry{}) + ctEntryOverhead

// CTEntriesFor is the fp_ct size for a node with memTotal bytes of RAM: ratio
// of it divided by the cost of an entry, rounded down to a power of two (so
// a node whose reported memory moves a little keeps its size, and with it
// its pinned map), within [CTMinEntries, CTMaxEntries].
func CTEntriesFor(memTotal uint64, ratio float64) int {
	n := uint64(float64(memTotal) * ratio / float64(CTEntryBytes))
	if n < CTMinEntries {
		return CTMinEntries
	}
	if n > CTMaxEntries {
		return CTMaxEntries
	}
	return 1 << (bits.Len64(n) - 1)
}

// MemTotal is the node's RAM in bytes.
func MemTotal() (uint64, error) {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return 0, fmt.Errorf("sysinfo: %w", err)
	}
	return uint64(si.Totalram) * uint64(si.Unit), nil
}

// PinnedCTEntries is the size of the fp_ct pinned under pinDir, 0 when
// there is none. A size derived from memory defers to it: resizing would
// mean a new, empty map, and established connections lost.
func PinnedCTEntries(pinDir string) (int, error) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, "maps", "fp_ct"), &ebpf.LoadPinOptions{ReadOnly: true})
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("pinned fp_ct: %w", err)
	}
	defer m.Close()
	return int(m.MaxEntries()), nil
}
