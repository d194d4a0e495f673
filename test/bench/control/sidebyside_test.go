package main

import "testing"

// TestPairedNs: the phase needs two counts, and the smaller within the
// side's addresses.
func TestPairedNs(t *testing.T) {
	for _, tc := range []struct {
		ns       []int
		headline bool
		want     bool
	}{
		{[]int{100, 20000}, true, true},
		{[]int{100, 20000}, false, false},
		{[]int{100}, true, false},
		{[]int{sideMax + 1, 50000}, true, false},
	} {
		cfg := defaultConfig()
		cfg.Ns, cfg.Headline = tc.ns, tc.headline
		if _, _, ok := pairedNs(cfg); ok != tc.want {
			t.Errorf("N %v headline %v: phase %v, want %v", tc.ns, tc.headline, ok, tc.want)
		}
	}
	if a, b := sideIP(sideMax-1), clusterIP(50000); b.Compare(sideIP(0)) >= 0 || a.String() != "10.96.255.255" {
		t.Errorf("side addresses %s..%s overlap the Services' (up to %s)", sideIP(0), a, b)
	}
}
