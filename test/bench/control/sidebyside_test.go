package main

import "testing"

// TestPairedOrder: in every repetition each path runs legs 1 and 2 at both
// counts, the counts alternate step by step, and a path's legs at one count
// have the same mean position as at the other, so a drift linear over the
// repetition cancels from the ratio.
func TestPairedOrder(t *testing.T) {
	for rep := 1; rep <= 4; rep++ {
		sum := map[string]map[bool]int{pathTC: {}, pathSock: {}}
		legs := map[string]map[bool]int{pathTC: {}, pathSock: {}}
		pos := 0
		steps := pairedOrder(rep)
		if steps[0].hi != (rep%2 == 0) {
			t.Errorf("rep %d starts at hi=%v: odd repetitions start at the smallest N", rep, steps[0].hi)
		}
		for i, st := range steps {
			if i > 0 && st.hi == steps[i-1].hi {
				t.Errorf("rep %d: steps %d and %d both at hi=%v", rep, i-1, i, st.hi)
			}
			for _, l := range st.legs {
				sum[l.path][st.hi] += pos
				legs[l.path][st.hi] = 10*legs[l.path][st.hi] + l.leg
				pos++
			}
		}
		for _, path := range []string{pathTC, pathSock} {
			if legs[path][false] != 12 || legs[path][true] != 12 {
				t.Errorf("rep %d %s: legs %v, want 1 then 2 at both counts", rep, path, legs[path])
			}
			if sum[path][false] != sum[path][true] {
				t.Errorf("rep %d %s: legs at the smallest N sum to position %d, at the largest to %d", rep, path, sum[path][false], sum[path][true])
			}
		}
	}
}

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
