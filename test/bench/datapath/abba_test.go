package main

import (
	"cmp"
	"math"
	"testing"
	"time"

	"github.com/fastpath-net/fastpath/test/bench/internal/loadgen"
)

// TestConnSchedule: every mode runs twice per repetition, each load
// balancer's block is base-mode-mode-base or its mirror, and over two
// repetitions each mode leads its block once.
func TestConnSchedule(t *testing.T) {
	lead := map[string]int{}
	for rep := 1; rep <= 2; rep++ {
		s := connSchedule(rep)
		if len(s) != 2*len(modes) {
			t.Fatalf("rep %d: %d runs, want %d", rep, len(s), 2*len(modes))
		}
		for i := 0; i < len(s); i += 4 {
			a, b, c, d := s[i], s[i+1], s[i+2], s[i+3]
			if a.mode.Name != d.mode.Name || b.mode.Name != c.mode.Name || a.mode.Name == b.mode.Name {
				t.Fatalf("rep %d: block %s %s %s %s is not ABBA", rep, a.mode.Name, b.mode.Name, c.mode.Name, d.mode.Name)
			}
			if a.leg != 1 || b.leg != 1 || c.leg != 2 || d.leg != 2 {
				t.Fatalf("rep %d: legs %d %d %d %d", rep, a.leg, b.leg, c.leg, d.leg)
			}
			if lb, base := b.mode, a.mode; lb.Base != base.Name && base.Base != lb.Name {
				t.Fatalf("rep %d: %s and %s are not a mode and its baseline", rep, a.mode.Name, b.mode.Name)
			}
			lead[a.mode.Name]++
		}
	}
	for _, m := range modes {
		if lead[m.Name] != 1 {
			t.Errorf("%s leads its block %d times in two repetitions, want 1", m.Name, lead[m.Name])
		}
	}
	// The blocks swap places too: rep 1's first pair ends rep 2.
	pair := func(l leg) string { return cmp.Or(l.mode.Base, l.mode.Name) }
	if first, last := pair(connSchedule(1)[0]), pair(connSchedule(2)[2*len(modes)-1]); first != last {
		t.Errorf("rep 1 starts with the %s pair, rep 2 ends with the %s pair", first, last)
	}
}

// TestPoolLegs: two legs make one repetition, as one run of both windows.
func TestPoolLegs(t *testing.T) {
	leg := func(l int, ops uint64, p50 float64, syn uint64) point {
		w := 500 * time.Millisecond
		return point{N: 1, Mode: "tc", Kind: loadgen.KindConn, Workers: 1, Rep: 3, Leg: l, Window: w, Ops: ops,
			Rate: float64(ops) / w.Seconds(), P50: p50, ClientCPU: 40 + float64(l)*10, ClientUser: 0.1, SynRetrans: syn}
	}
	lat := point{N: 1, Mode: "tc", Kind: loadgen.KindLatency, Workers: 1, Rep: 3, Rate: 7}
	got := poolLegs([]point{leg(1, 1000, 100, 1), lat, leg(2, 3000, 200, 2)})
	if len(got) != 2 || got[1].Kind != loadgen.KindLatency || got[1].Rate != 7 {
		t.Fatalf("pooled: %+v", got)
	}
	p := got[0]
	if p.Leg != 0 || p.Ops != 4000 || p.Window != time.Second || p.Rate != 4000 || p.SynRetrans != 3 {
		t.Errorf("pooled point: %+v", p)
	}
	if math.Abs(p.P50-175) > 1e-9 || p.ClientCPU != 55 || math.Abs(p.ClientUser-0.2) > 1e-9 {
		t.Errorf("p50 %v (want 175, weighted by connections), client CPU %v (want 55), user %v s (want 0.2)", p.P50, p.ClientCPU, p.ClientUser)
	}
	failed := leg(2, 0, 0, 0)
	failed.Err = "boom"
	if got := poolLegs([]point{leg(1, 1000, 100, 1), failed}); len(got) != 1 || got[0].Err != "boom" {
		t.Errorf("a failed leg must fail its repetition: %+v", got)
	}
}
