package metrics

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestProgrammingBucketsAreKubeProxys pins the buckets to kube-proxy's
// (0.25, 0.5, 1..59, 60..115 by 5, 120..300 by 30): dashboards compare
// the two histograms bucket by bucket.
func TestProgrammingBucketsAreKubeProxys(t *testing.T) {
	var want []float64
	want = append(want, 0.25, 0.5)
	for s := 1; s <= 59; s++ {
		want = append(want, float64(s))
	}
	for s := 60; s <= 115; s += 5 {
		want = append(want, float64(s))
	}
	for s := 120; s <= 300; s += 30 {
		want = append(want, float64(s))
	}
	if got := programmingBuckets(); !slices.Equal(got, want) || len(got) != 80 {
		t.Fatalf("buckets (%d) %v\nwant (%d) %v", len(got), got, len(want), want)
	}
}

func TestObserve(t *testing.T) {
	var none *Metrics // the agent without --metrics-addr
	none.ObserveSync(SyncFull, time.Second, true)
	none.ObserveProgrammed([]time.Time{time.Now()}, time.Now())

	m := New()
	now := time.Now()
	m.ObserveProgrammed([]time.Time{now.Add(-300 * time.Millisecond), now.Add(-2 * time.Second)}, now)
	m.ObserveSync(SyncPartial, time.Millisecond, false)
	m.ObserveSync(SyncPartial, time.Millisecond, true)
	want := `
# HELP fastpath_sync_errors_total Syncs that left some frontends unprogrammed (retried with backoff), by mode.
# TYPE fastpath_sync_errors_total counter
fastpath_sync_errors_total{mode="full"} 0
fastpath_sync_errors_total{mode="partial"} 1
`
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(want), "fastpath_sync_errors_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(m.programming); n != 1 {
		t.Errorf("programming histogram has %d series; want 1 (IPv4)", n)
	}
	got, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range got {
		if mf.GetName() != "fastpath_network_programming_duration_seconds" {
			continue
		}
		h := mf.GetMetric()[0].GetHistogram()
		if h.GetSampleCount() != 2 || h.GetBucket()[0].GetCumulativeCount() != 0 || h.GetBucket()[1].GetCumulativeCount() != 1 {
			t.Errorf("programming histogram: %d samples, le=0.25: %d, le=0.5: %d; want 2, 0, 1",
				h.GetSampleCount(), h.GetBucket()[0].GetCumulativeCount(), h.GetBucket()[1].GetCumulativeCount())
		}
	}
}
