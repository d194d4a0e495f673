package agent

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fastpath-net/fastpath/internal/metrics"
)

func TestLRUCapacity(t *testing.T) {
	for _, c := range []struct{ size, cpus, want int }{
		{262144, 64, 262144 - 64*128}, // free target capped at 128 per CPU
		{262144, 2, 262144 - 256},
		{64, 2, 32}, // free target 64/2/2 = 16 per CPU
		{1000, 1, 872},
		{3, 8, 1}, // never below half the map, never 0
	} {
		if got := lruCapacity(c.size, c.cpus); got != c.want {
			t.Errorf("lruCapacity(%d, %d) = %d; want %d", c.size, c.cpus, got, c.want)
		}
	}
}

// TestCTPressure walks fp_ct's fill up and down: one Warning Event per
// level reached (not per walk), none while it hovers at a threshold, and
// the full gauge and counter follow the walks.
func TestCTPressure(t *testing.T) {
	var logs bytes.Buffer
	var events []string
	m := metrics.New()
	p := ctPressure{log: slog.New(slog.NewTextHandler(&logs, nil)), metrics: m, cpus: 2, event: func(reason, msg string) {
		events = append(events, reason+": "+msg)
	}}
	const size = 100000
	capacity := float64(lruCapacity(size, 2)) // 99744
	for _, f := range []float64{0.1, 0.899, 0.9, 0.92, 0.88, 0.86, 1.0, 1.001, 0.99, 0.93, 0.8, 0.9} {
		p.observe(int(f*capacity+0.5), size)
	}
	want := []string{
		// 0.9; 0.92, 0.88 and 0.86 stay nearly full (0.86: within the hysteresis)
		ReasonCTNearlyFull + ": conntrack table fp_ct is 90% full (89770 of 100000 entries)",
		// 1.0; 1.001 and 0.99 stay full; 0.93 is nearly full again, without an Event
		ReasonCTFull + ": conntrack table fp_ct is full (99744 of 100000 entries): new connections evict the least recently used entries (LRU)",
		// 0.8 is OK; 0.9 warns again
		ReasonCTNearlyFull + ": conntrack table fp_ct is 90% full (89770 of 100000 entries)",
	}
	if len(events) != len(want) {
		t.Fatalf("events:\n%s\nwant %d", strings.Join(events, "\n"), len(want))
	}
	for i := range want {
		if !strings.HasPrefix(events[i], want[i]) || !strings.Contains(events[i], "--ct-max") {
			t.Errorf("event %d: %q\nwant prefix %q and the flag to raise", i, events[i], want[i])
		}
	}
	// 1.0, 1.001 and 0.99 (within the hysteresis) were full walks; 0.93 not.
	exp := "# HELP fastpath_conntrack_full_walks_total Garbage-collection walks that found fp_ct full (evicting), so a full table between two scrapes is not missed.\n" +
		"# TYPE fastpath_conntrack_full_walks_total counter\nfastpath_conntrack_full_walks_total 3\n"
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(exp), "fastpath_conntrack_full_walks_total"); err != nil {
		t.Error(err)
	}
	if !strings.Contains(logs.String(), "no longer full") || !strings.Contains(logs.String(), "below the warning level again") {
		t.Errorf("log does not say the table recovered:\n%s", logs.String())
	}
	p.observe(size, size) // nearly full -> full
	p.observe(size, size) // still full: no second Event
	if len(events) != 4 || !strings.HasPrefix(events[3], ReasonCTFull) {
		t.Errorf("events after the table filled again: %q", events)
	}
	none := &ctPressure{log: slog.New(slog.NewTextHandler(&logs, nil))} // no Kubernetes, no metrics
	none.observe(size, size)
}
