package lab

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/fastpath-net/fastpath/internal/ctl"
	"github.com/fastpath-net/fastpath/internal/datapath/pkttest"
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
	client := openPodNS(t, "client")
	c := checkSpread(client, "metrics traffic", net.JoinHostPort(vip.String(), "7"))
	if c.err != nil {
		t.Fatalf("traffic for the metrics check: %v (%s)", c.err, c.detail)
	}
	spoofFrom(t, client, st.Nodes)
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
		// spoofFrom: the agent wrote the client's address, tc_lb checked it.
		`fastpath_datapath_drops_total{reason="spoofed"}`,
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
			// l7Checks ran before: each node's proxy denied requests.
			{`fastpath_l7_requests_total{direction="ingress",verdict="denied"}`, positive},
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

// spoofFrom sends, from the client pod, UDP datagrams to every web pod
// with a node's address as their source: tc_lb must drop them as spoofed
// (a pod may send only from its own address), which proves the agent gave
// the datapath the client's address; metricsChecks counts the drops.
func spoofFrom(t *testing.T, client *nettopo.NS, nodes int) {
	t.Helper()
	pods, err := podsWithIPs(t.Context(), mustClient(t), nodes)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods {
		if p.app != "web" {
			continue
		}
		f := pkttest.Flow{Src: netip.AddrPortFrom(nodeIP(1), 5353), Dst: netip.AddrPortFrom(p.ip, 7)}
		if err := client.SendRawIPv4(pkttest.UDPDatagram(f, []byte("spoofed"), false)); err != nil {
			t.Fatalf("spoofed datagram to %s: %v", p.name, err)
		}
	}
}

func positive(v float64) bool { return v > 0 }

func scrapeNodes(t *testing.T, nodes int) []map[string]float64 {
	t.Helper()
	var out []map[string]float64
	for i := 1; i <= nodes; i++ {
		out = append(out, scrapeNode(t, i))
	}
	return out
}

// scrapeNode reads node i's /metrics from inside the node.
func scrapeNode(t *testing.T, i int) map[string]float64 {
	t.Helper()
	ns, err := nettopo.OpenNS(nodeNSName(i))
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Release()
	resp, err := ns.HTTPClient(probeTimeout).Get("http://127.0.0.1:10249/metrics")
	if err != nil {
		t.Fatalf("%s /metrics: %v", nodeName(i), err)
	}
	defer resp.Body.Close()
	m, err := metrics.ParseText(resp.Body)
	if err != nil {
		t.Fatalf("%s /metrics: %v", nodeName(i), err)
	}
	if resp.StatusCode != http.StatusOK || len(m) < 50 {
		t.Fatalf("%s /metrics: status %d, %d series", nodeName(i), resp.StatusCode, len(m))
	}
	return m
}

// nodeProbeChecks: each agent reports the other node reachable (with a
// latency) in /metrics and in its status; node2's agent stopped, node1
// reports node2 unreachable within a few probe intervals (1 s in the lab),
// and reachable again once it is back.
func nodeProbeChecks(t *testing.T, st *State, opts Options) {
	t.Helper()
	reach := func(to int) string {
		return fmt.Sprintf(`fastpath_node_reachable{node="%s"}`, nodeName(to))
	}
	waitNode := func(from, to int, want float64) map[string]float64 {
		t.Helper()
		var m map[string]float64
		for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			m = scrapeNode(t, from) // only from: the other's agent may be stopped
			if v, ok := m[reach(to)]; ok && v == want {
				return m
			}
		}
		t.Fatalf("%s: %s never became %v (last %v)", nodeName(from), reach(to), want, m[reach(to)])
		return nil
	}
	for _, p := range [][2]int{{1, 2}, {2, 1}} {
		m := waitNode(p[0], p[1], 1)
		if lat := m[fmt.Sprintf(`fastpath_node_probe_latency_seconds{node="%s"}`, nodeName(p[1]))]; lat <= 0 || lat > 2 {
			t.Errorf("%s -> %s probe latency %v s", nodeName(p[0]), nodeName(p[1]), lat)
		}
	}
	status := agentStatus(t, 1)
	if len(status.Nodes) != 1 || status.Nodes[0].Node != nodeName(2) || !status.Nodes[0].OK || status.Nodes[0].Address != nodeIP(2).String() ||
		status.APIServer == nil || !status.APIServer.OK {
		t.Errorf("node1's status: nodes %+v, apiserver %+v; want node2 reachable at %s and the apiserver ok", status.Nodes, status.APIServer, nodeIP(2))
	}

	if err := stop(st.Processes["agent-node2"]); err != nil {
		t.Fatal(err)
	}
	waitNode(1, 2, 0)
	if s := agentStatus(t, 1); len(s.Nodes) != 1 || s.Nodes[0].OK || s.Nodes[0].Error == "" {
		t.Errorf("node1's status with node2's agent stopped: %+v", s.Nodes)
	}
	if err := startAgent(opts, st, 2); err != nil {
		t.Fatal(err)
	}
	waitNode(1, 2, 1)
}

// agentStatus asks node i's agent for its status, from inside the node.
func agentStatus(t *testing.T, i int) ctl.AgentStatus {
	t.Helper()
	ns, err := nettopo.OpenNS(nodeNSName(i))
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Release()
	resp, err := ns.HTTPClient(probeTimeout).Get("http://127.0.0.1:10249" + ctl.AgentStatusPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st ctl.AgentStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}
