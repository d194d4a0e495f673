package metrics

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fastpath-net/fastpath/internal/ctl"
)

var (
	descPackets = prometheus.NewDesc("fastpath_datapath_packets_total",
		"Packets the BPF programs handled, by outcome (fp_metrics; drop_* outcomes are in fastpath_datapath_drops_total).",
		[]string{"outcome"}, nil)
	descBytes = prometheus.NewDesc("fastpath_datapath_bytes_total",
		"Bytes of the packets in fastpath_datapath_packets_total, by outcome.", []string{"outcome"}, nil)
	descForwarded = prometheus.NewDesc("fastpath_datapath_forwarded_packets_total",
		"Packets the BPF programs translated and passed on, by direction: original (client to backend: forward_new, forward_ct) "+
			"or reply (backend to client: reply_revnat, icmp_error_revnat).", []string{"direction"}, nil)
	descForwardedBytes = prometheus.NewDesc("fastpath_datapath_forwarded_bytes_total",
		"Bytes of fastpath_datapath_forwarded_packets_total, by direction.", []string{"direction"}, nil)
	descDrops = prometheus.NewDesc("fastpath_datapath_drops_total",
		"Packets the BPF programs dropped or rejected, by reason (fp_metrics).", []string{"reason"}, nil)
	descEntries = prometheus.NewDesc("fastpath_bpf_map_entries",
		"Entries in a pinned BPF map (arrays count as full).", []string{"map"}, nil)
	descMax = prometheus.NewDesc("fastpath_bpf_map_max_entries",
		"Capacity of a pinned BPF map.", []string{"map"}, nil)
	descFill = prometheus.NewDesc("fastpath_bpf_map_fill_ratio",
		"Entries divided by capacity: LRU maps (fp_ct, fp_affinity, fp_sock_revnat) evict at 1, hash maps refuse inserts.",
		[]string{"map"}, nil)
	descMemory = prometheus.NewDesc("fastpath_bpf_map_memory_bytes",
		"Kernel memory charged to a BPF map (memlock in its fdinfo).", []string{"map"}, nil)
	descScrapeErrors = prometheus.NewDesc("fastpath_bpf_map_read_errors",
		"Maps that could not be read during this scrape (see the agent's log).", nil, nil)
)

// datapathCollector reads the maps pinned under dir/maps at every scrape,
// so what it reports is what the datapath holds, and a map added to the
// datapath later is reported without a change here.
type datapathCollector struct {
	dir string
	log *slog.Logger
}

// AddDatapath exports the counters of fp_metrics and the fill and memory
// of every map pinned under pinDir/maps.
func (m *Metrics) AddDatapath(pinDir string, log *slog.Logger) {
	if m == nil {
		return
	}
	m.Registry.MustRegister(&datapathCollector{dir: filepath.Join(pinDir, "maps"), log: log})
}

func (c *datapathCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPackets, descBytes, descForwarded, descForwardedBytes, descDrops, descEntries, descMax, descFill, descMemory, descScrapeErrors} {
		ch <- d
	}
}

func (c *datapathCollector) Collect(ch chan<- prometheus.Metric) {
	names, err := os.ReadDir(c.dir)
	if err != nil {
		c.log.Error("metrics: list pinned maps", "dir", c.dir, "error", err)
	}
	failed := 0
	for _, e := range names {
		if err := c.collectMap(e.Name(), ch); err != nil {
			c.log.Error("metrics: read pinned map", "map", e.Name(), "error", err)
			failed++
		}
	}
	ch <- prometheus.MustNewConstMetric(descScrapeErrors, prometheus.GaugeValue, float64(failed))
}

func (c *datapathCollector) collectMap(name string, ch chan<- prometheus.Metric) error {
	m, err := ebpf.LoadPinnedMap(filepath.Join(c.dir, name), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	defer m.Close()
	st, err := ctl.ReadMapStatus(name, m)
	if err != nil {
		return err
	}
	ch <- prometheus.MustNewConstMetric(descMemory, prometheus.GaugeValue, float64(st.MemoryBytes), name)
	if m.Type() == ebpf.RingBuf {
		return nil // a ring buffer has no entries to fill
	}
	ch <- prometheus.MustNewConstMetric(descEntries, prometheus.GaugeValue, float64(st.Entries), name)
	ch <- prometheus.MustNewConstMetric(descMax, prometheus.GaugeValue, float64(st.MaxEntries), name)
	if st.MaxEntries > 0 {
		ch <- prometheus.MustNewConstMetric(descFill, prometheus.GaugeValue, float64(st.Entries)/float64(st.MaxEntries), name)
	}
	if name == "fp_metrics" {
		return collectCounters(m, ch)
	}
	return nil
}

// forwardDirection names the direction of the outcomes that forward a
// packet; the others drop it or count socket-LB connects, not packets.
var forwardDirection = map[string]string{
	"forward_new": "original", "forward_ct": "original",
	"reply_revnat": "reply", "icmp_error_revnat": "reply",
}

// counter is struct fp_metric (bpf/include/fastpath.h).
type counter struct{ Packets, Bytes uint64 }

// collectCounters sums fp_metrics over CPUs. Indexes are named by
// ctl.CounterNames (enum fp_metric_index); one the list does not name yet
// is still exported, as index_N, rather than lost.
func collectCounters(m *ebpf.Map, ch chan<- prometheus.Metric) error {
	dirs := map[string]*counter{"original": {}, "reply": {}}
	defer func() {
		for dir, c := range dirs {
			ch <- prometheus.MustNewConstMetric(descForwarded, prometheus.CounterValue, float64(c.Packets), dir)
			ch <- prometheus.MustNewConstMetric(descForwardedBytes, prometheus.CounterValue, float64(c.Bytes), dir)
		}
	}()
	for i := range m.MaxEntries() {
		var per []counter
		if err := m.Lookup(i, &per); err != nil {
			return fmt.Errorf("fp_metrics[%d]: %w", i, err)
		}
		var sum counter
		for _, c := range per {
			sum.Packets += c.Packets
			sum.Bytes += c.Bytes
		}
		name := fmt.Sprintf("index_%d", i)
		if int(i) < len(ctl.CounterNames) {
			name = ctl.CounterNames[i]
		}
		if dir, ok := forwardDirection[name]; ok {
			dirs[dir].Packets += sum.Packets
			dirs[dir].Bytes += sum.Bytes
		}
		if reason, ok := strings.CutPrefix(name, "drop_"); ok {
			ch <- prometheus.MustNewConstMetric(descDrops, prometheus.CounterValue, float64(sum.Packets), reason)
			continue
		}
		ch <- prometheus.MustNewConstMetric(descPackets, prometheus.CounterValue, float64(sum.Packets), name)
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(sum.Bytes), name)
	}
	return nil
}
