package lab

import (
	"net"
	"net/http"
	"testing"

	"github.com/fastpath-net/fastpath/internal/metrics"
	"github.com/fastpath-net/fastpath/internal/nettopo"
)

// metricsChecks scrapes every node's /metrics (127.0.0.1:10249 inside the
// node, through a netns-aware client) around 40 connections from the
// client pod to the web ClusterIP, and wants the key series present and
// the counters moving: forwarded packets and bytes both ways, Services and
// backends programmed, policy computation observed (policyChecks ran
// before), map fill, memlock and agent memory, and no unreadable map.
func metricsChecks(t *testing.T, st *State) {
	t.Helper()
	before := scrapeNodes(t, st.Nodes)
	vip, err := clusterIP(t.Context(), mustClient(t), "web")
	if err != nil {
		t.Fatal(err)
	}
	c := checkSpread(openPodNS(t, "client"), "metrics traffic", net.JoinHostPort(vip.String(), "7"))
	if c.err != nil {
		t.Fatalf("traffic for the metrics check: %v (%s)", c.err, c.detail)
	}
	after := scrapeNodes(t, st.Nodes)
	sum := func(set []map[string]float64, series string) float64 {
		var v float64
		for _, m := range set {
			v += m[series]
		}
		return v
	}
	for _, series := range []string{
		`fastpath_datapath_forwarded_packets_total{direction="original"}`, `fastpath_datapath_forwarded_packets_total{direction="reply"}`,
		`fastpath_datapath_forwarded_bytes_total{direction="original"}`, `fastpath_datapath_forwarded_bytes_total{direction="reply"}`,
		`fastpath_datapath_packets_total{outcome="forward_new"}`,
	} {
		if b, a := sum(before, series), sum(after, series); a <= b {
			t.Errorf("%s summed over nodes: %v before 40 connections, %v after; want it to grow", series, b, a)
		}
	}
	for i, m := range after {
		node := nodeName(i + 1)
		for _, want := range []struct {
			series string
			ok     func(float64) bool
		}{
			{`fastpath_services_programmed`, positive},
			{`fastpath_backends_programmed`, positive},
			{`fastpath_policy_duration_seconds_count{phase="compute"}`, positive},
			{`fastpath_policy_duration_seconds_count{phase="write"}`, positive},
			{`fastpath_sync_duration_seconds_count{mode="full"}`, positive},
			{`fastpath_bpf_map_memory_bytes{map="fp_ct"}`, positive},
			{`fastpath_bpf_map_fill_ratio{map="fp_ct"}`, func(v float64) bool { return v > 0 && v < 1 }},
			{`fastpath_bpf_map_max_entries{map="fp_ct"}`, func(v float64) bool { return v >= 1<<17 }}, // derived from memory
			{`fastpath_datapath_drops_total{reason="no_backend"}`, func(v float64) bool { return v >= 0 }},
			{`process_resident_memory_bytes`, positive},
			{`fastpath_bpf_map_read_errors`, func(v float64) bool { return v == 0 }},
			{`fastpath_conntrack_full`, func(v float64) bool { return v == 0 }},
		} {
			v, found := m[want.series]
			if !found || !want.ok(v) {
				t.Errorf("%s: %s = %v (present: %v)", node, want.series, v, found)
			}
		}
	}
}

func positive(v float64) bool { return v > 0 }

func scrapeNodes(t *testing.T, nodes int) []map[string]float64 {
	t.Helper()
	var out []map[string]float64
	for i := 1; i <= nodes; i++ {
		ns, err := nettopo.OpenNS(nodeNSName(i))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := ns.HTTPClient(probeTimeout).Get("http://127.0.0.1:10249/metrics")
		ns.Release()
		if err != nil {
			t.Fatalf("%s /metrics: %v", nodeName(i), err)
		}
		m, err := metrics.ParseText(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("%s /metrics: %v", nodeName(i), err)
		}
		if resp.StatusCode != http.StatusOK || len(m) < 50 {
			t.Fatalf("%s /metrics: status %d, %d series", nodeName(i), resp.StatusCode, len(m))
		}
		out = append(out, m)
	}
	return out
}
