package e2e

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestFullConntrackEvictsAndSaysSo gives the agent a conntrack map of 64
// entries and makes 150 connections through the VIP (two entries each,
// kept 10 s and 60 s after the close): the map fills, and yet every new
// connection is served, because fp_ct is an LRU that evicts its oldest
// entries; and the agent says so in its metrics and log.
func TestFullConntrackEvictsAndSaysSo(t *testing.T) {
	l := startWeb(t, "--ct-max", "64", "--ct-gc-interval", "100ms")
	node := l.star.Node
	before := waitScrape(t, node, `fastpath_bpf_map_max_entries{map="fp_ct"}`, func(v float64) bool { return v == 64 })
	if v := before["fastpath_conntrack_full"]; v != 0 {
		t.Fatalf("fastpath_conntrack_full %v on an empty map", v)
	}
	seen := askMany(t, l.client(), 150) // fails the test at the first refused or timed-out connection
	if seen["be1"]+seen["be2"] != 150 {
		t.Fatalf("150 connections reached %v", seen)
	}
	after := waitScrape(t, node, "fastpath_conntrack_full", func(v float64) bool { return v == 1 })
	// An evicting LRU of 64 entries on 2 CPUs holds 32 to 64 of them
	// (per-CPU free lists of 16).
	if fill := after[`fastpath_bpf_map_fill_ratio{map="fp_ct"}`]; fill < 0.5 {
		t.Errorf("fp_ct fill ratio %v with the table full", fill)
	}
	if after["fastpath_conntrack_full_walks_total"] < 1 {
		t.Errorf("fastpath_conntrack_full_walks_total %v", after["fastpath_conntrack_full_walks_total"])
	}
	if d := after[`fastpath_datapath_drops_total{reason="ct_full"}`] - before[`fastpath_datapath_drops_total{reason="ct_full"}`]; d != 0 {
		t.Errorf("%v packets dropped as ct_full: an LRU must evict, not refuse", d)
	}
	waitLog(t, l, "conntrack table fp_ct is full (")
	if log := l.agentLog.String(); !strings.Contains(log, "raise --ct-max") {
		t.Fatalf("the log does not say what to raise:\n%s", log)
	}
	// Still serving once full: new flows keep evicting old entries.
	if seen := askMany(t, l.client(), 20); seen["be1"]+seen["be2"] != 20 {
		t.Fatalf("with fp_ct full, 20 connections reached %v", seen)
	}
}

// TestFullConntrackWarnsOnTheNode: with Kubernetes as the source, a full
// fp_ct is a Warning Event on the agent's Node (FastpathConntrackFull),
// where kubectl describe node shows it.
func TestFullConntrackWarnsOnTheNode(t *testing.T) {
	l, cs := newKubeLab(t, "be1", "be2")
	l.extra = []string{"--ct-max", "64", "--ct-gc-interval", "100ms"}
	l.startAgent()
	svc := createOpsService(t, cs, "web", nil)
	if _, err := cs.DiscoveryV1().EndpointSlices(k8sNS).Create(t.Context(), webSlice(l.backendAddr("be1"), l.backendAddr("be2")), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	l.waitBackends(svc.Spec.ClusterIP+":80/TCP", l.backendAddr("be1")+":8080", l.backendAddr("be2")+":8080")
	askVIP(t, l.client(), svc.Spec.ClusterIP+":80", 150)
	reasons := map[string]string{}
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		evs, err := cs.CoreV1().Events("").List(t.Context(), metav1.ListOptions{FieldSelector: "involvedObject.kind=Node,involvedObject.name=" + l.kube.nodeName})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs.Items {
			if e.Type == corev1.EventTypeWarning {
				reasons[e.Reason] = e.Message
			}
		}
		if reasons["FastpathConntrackFull"] != "" {
			break
		}
	}
	if msg := reasons["FastpathConntrackFull"]; !strings.Contains(msg, "least recently used") || !strings.Contains(msg, "--ct-max") {
		t.Fatalf("Warning Events on Node %s: %v; want FastpathConntrackFull saying what happens and what to raise", l.kube.nodeName, reasons)
	}
}
