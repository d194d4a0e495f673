package policy_test

import (
	"math/rand/v2"
	"testing"

	"github.com/fastpath-net/fastpath/internal/policy"
)

// TestPortPrefixes: the blocks of a range cover exactly the range, never
// overlap, and are at most 30, on edge cases and random ranges.
func TestPortPrefixes(t *testing.T) {
	cases := [][2]uint16{{80, 80}, {80, 81}, {1, 65535}, {0, 65535}, {1024, 2047}, {81, 85}, {65535, 65535}, {1, 1}, {32767, 32769}}
	r := rand.New(rand.NewPCG(1, 2))
	for range 300 {
		a, b := uint16(r.IntN(65536)), uint16(r.IntN(65536))
		if a > b {
			a, b = b, a
		}
		if a == 0 && b == 0 {
			continue
		}
		cases = append(cases, [2]uint16{a, b})
	}
	for _, c := range cases {
		ps := policy.PortPrefixes(c[0], c[1])
		if len(ps) > 30 {
			t.Errorf("%d-%d: %d blocks", c[0], c[1], len(ps))
		}
		for port := 0; port <= 65535; port++ {
			n := 0
			for _, p := range ps {
				if p.Contains(uint16(port)) {
					n++
				}
			}
			in := port >= int(c[0]) && port <= int(c[1])
			if (in && n != 1) || (!in && n != 0) {
				t.Fatalf("%d-%d: port %d covered %d times by %v", c[0], c[1], port, n, ps)
			}
		}
	}
	if ps := policy.PortPrefixes(80, 81); len(ps) != 1 || ps[0] != (policy.PortPrefix{Port: 80, Bits: 15}) {
		t.Errorf("80-81 = %v, want one 15-bit block", ps)
	}
	if ps := policy.PortPrefixes(0, 0); len(ps) != 1 || ps[0].Bits != 0 {
		t.Errorf("every port = %v", ps)
	}
}
