package ctl

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"

	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
)

// Status is the one-screen summary of a pinned datapath.
type Status struct {
	PinDir string `json:"pinDir"`
	// Masquerade is fp_config: the source of masqueraded flows ("" when
	// none is set) and their port range.
	Masquerade MasqueradeStatus  `json:"masquerade"`
	Maps       []MapStatus       `json:"maps"`
	Links      []string          `json:"links"`
	Counters   map[string]uint64 `json:"counters"`
	// MapMemoryBytes is the kernel's memlock accounting summed over maps.
	MapMemoryBytes uint64 `json:"mapMemoryBytes"`
}

// MapStatus is the fill and memory of one map.
type MapStatus struct {
	Name        string `json:"name"`
	Type        string `json:"type"`
	Entries     int    `json:"entries"`
	MaxEntries  int    `json:"maxEntries"`
	MemoryBytes uint64 `json:"memoryBytes"`
}

// MasqueradeStatus is the node's source-NAT setting.
type MasqueradeStatus struct {
	Address string `json:"address,omitempty"`
	PortMin uint16 `json:"portMin"`
	PortMax uint16 `json:"portMax"`
}

// CounterNames name the fp_metrics indexes (enum fp_metric_index).
var CounterNames = []string{
	"forward_new", "forward_ct", "reply_revnat", "icmp_error_revnat",
	"drop_no_backend", "drop_ct_full", "drop_malformed", "drop_backend_gone",
	"sock_connect", "sock_no_backend", "drop_snat_no_port", "drop_no_route",
	"drop_source_range", "drop_spoofed",
}

// ReadStatus gathers the status of the datapath pinned under p.Dir.
func ReadStatus(p *Pinned) (*Status, error) {
	st := &Status{PinDir: p.Dir, Counters: map[string]uint64{}}
	for _, name := range MapNames {
		ms, err := ReadMapStatus(name, p.raw[name])
		if err != nil {
			return nil, err
		}
		st.Maps = append(st.Maps, ms)
		st.MapMemoryBytes += ms.MemoryBytes
	}
	links, err := os.ReadDir(filepath.Join(p.Dir, "links"))
	if err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	for _, l := range links {
		st.Links = append(st.Links, l.Name())
	}
	if err := readCounters(p.Metrics, st.Counters); err != nil {
		return nil, err
	}
	var cfg lbmap.Config
	if err := p.raw["fp_config"].Lookup(uint32(0), &cfg); err != nil {
		return nil, fmt.Errorf("fp_config: %w", err)
	}
	st.Masquerade = MasqueradeStatus{PortMin: cfg.SnatPortMin, PortMax: cfg.SnatPortMax}
	if ip := cfg.MasqAddr.IP(); ip.Is4() {
		st.Masquerade.Address = ip.String()
	}
	return st, nil
}

// ReadMapStatus reads the fill (by walking the map; arrays are always
// full) and the kernel's memlock accounting of one map.
func ReadMapStatus(name string, m *ebpf.Map) (MapStatus, error) {
	info, err := m.Info()
	if err != nil {
		return MapStatus{}, fmt.Errorf("map %s: info: %w", name, err)
	}
	ms := MapStatus{Name: name, Type: m.Type().String(), MaxEntries: int(m.MaxEntries())}
	if mem, ok := info.Memlock(); ok {
		ms.MemoryBytes = mem
	}
	if m.Type() == ebpf.PerCPUArray || m.Type() == ebpf.Array {
		ms.Entries = ms.MaxEntries
		return ms, nil
	}
	if m.Type() == ebpf.RingBuf {
		// No keys to count (fp_verdicts); its "max entries" is its size
		// in bytes.
		return ms, nil
	}
	n, err := countEntries(m)
	if err != nil {
		return MapStatus{}, fmt.Errorf("map %s: %w", name, err)
	}
	ms.Entries = n
	return ms, nil
}

// readCounters sums the per-CPU packet counters of fp_metrics.
func readCounters(m *ebpf.Map, out map[string]uint64) error {
	type metric struct{ Packets, Bytes uint64 }
	for i, name := range CounterNames {
		var per []metric
		if err := m.Lookup(uint32(i), &per); err != nil {
			return fmt.Errorf("fp_metrics[%s]: %w", name, err)
		}
		var sum uint64
		for _, c := range per {
			sum += c.Packets
		}
		out[name] = sum
	}
	return nil
}

// FormatStatus renders the status screen.
func FormatStatus(st *Status) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Datapath pinned at: %s\n", st.PinDir)
	fmt.Fprintf(&b, "Attached (pinned links): %s\n", orNone(st.Links))
	masq := st.Masquerade.Address
	if masq == "" {
		masq = "(none: hairpin and external traffic are not masqueraded)"
	}
	fmt.Fprintf(&b, "Masquerade: %s ports %d-%d\n\n", masq, st.Masquerade.PortMin, st.Masquerade.PortMax)
	b.WriteString(formatMaps(st))
	fmt.Fprintf(&b, "\nCOUNTER (packets)\n")
	for _, n := range CounterNames {
		fmt.Fprintf(&b, "  %-20s %d\n", n, st.Counters[n])
	}
	return b.String()
}

// formatMaps is the table of maps, their fill and memory.
func formatMaps(st *Status) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-16s %-14s %12s %12s %6s %12s\n", "MAP", "TYPE", "ENTRIES", "MAX", "FILL", "MEMORY")
	for _, m := range st.Maps {
		fill := 0.0
		if m.MaxEntries > 0 {
			fill = 100 * float64(m.Entries) / float64(m.MaxEntries)
		}
		fmt.Fprintf(&b, "%-16s %-14s %12d %12d %5.1f%% %12s\n", m.Name, m.Type, m.Entries, m.MaxEntries, fill, bytesString(m.MemoryBytes))
	}
	fmt.Fprintf(&b, "%-16s %-14s %12s %12s %6s %12s\n", "total", "", "", "", "", bytesString(st.MapMemoryBytes))
	return b.String()
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "(none)"
	}
	return strings.Join(s, ", ")
}

func bytesString(n uint64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
