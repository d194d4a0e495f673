package e2e

import (
	"strings"
	"testing"
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
