package rounds

import (
	"math"
	"slices"
	"testing"
)

func TestOf(t *testing.T) {
	s := Of([]float64{3, 1, math.NaN(), 2, 10})
	if s.Median != 2.5 || s.Min != 1 || s.Max != 10 || s.N != 4 {
		t.Fatalf("%+v", s)
	}
	if s := Of([]float64{5, 1, 3}); s.Median != 3 {
		t.Fatalf("odd: %+v", s)
	}
	if s := Of(nil); s.N != 0 || !math.IsNaN(s.Median) || s.Percent() != "–" {
		t.Fatalf("empty: %+v", s)
	}
}

func TestRatio(t *testing.T) {
	// Round 3 has no b, round 4's b is 0: both left out.
	a := map[int]float64{1: 90, 2: 100, 3: 50, 4: 10}
	b := map[int]float64{1: 100, 2: 100, 4: 0}
	s := Ratio(a, b)
	if s.N != 2 || s.Median != 0.95 || s.Min != 0.9 || s.Max != 1 {
		t.Fatalf("%+v", s)
	}
	if got := s.Percent(); got != "95.0 % (90–100)" {
		t.Fatalf("Percent: %q", got)
	}
}

func TestABBA(t *testing.T) {
	want := map[int][]Run[string]{
		1: {{"base", 1}, {"x", 1}, {"x", 2}, {"base", 2}},
		2: {{"x", 1}, {"base", 1}, {"base", 2}, {"x", 2}},
		3: {{"base", 1}, {"x", 1}, {"x", 2}, {"base", 2}},
	}
	for rep, w := range want {
		if got := ABBA(rep, "base", "x"); !slices.Equal(got, w) {
			t.Errorf("round %d: %v, want %v", rep, got, w)
		}
	}
}

// TestPaired: in every repetition each item runs leg 1 and then leg 2 at
// each count, the counts alternate step by step, odd repetitions start at
// the smaller count and even ones at the larger, and an item's legs at one
// count have the same mean position as at the other, so a drift linear
// over the repetition cancels from its ratio.
func TestPaired(t *testing.T) {
	for rep := 1; rep <= 4; rep++ {
		sum := map[string]map[bool]int{"a": {}, "b": {}}
		legs := map[string]map[bool][]int{"a": {}, "b": {}}
		pos := 0
		steps := Paired(rep, "a", "b")
		if steps[0].Hi != (rep%2 == 0) {
			t.Errorf("rep %d starts at hi=%v: odd repetitions start at the smaller count, even ones at the larger", rep, steps[0].Hi)
		}
		for i, st := range steps {
			if i > 0 && st.Hi == steps[i-1].Hi {
				t.Errorf("rep %d: steps %d and %d are both at hi=%v", rep, i-1, i, st.Hi)
			}
			for _, r := range st.Runs {
				sum[r.Item][st.Hi] += pos
				legs[r.Item][st.Hi] = append(legs[r.Item][st.Hi], r.Leg)
				pos++
			}
		}
		for _, item := range []string{"a", "b"} {
			for _, hi := range []bool{false, true} {
				if got := legs[item][hi]; !slices.Equal(got, []int{1, 2}) {
					t.Errorf("rep %d %s hi=%v: legs %v, want 1 then 2", rep, item, hi, got)
				}
			}
			if sum[item][false] != sum[item][true] {
				t.Errorf("rep %d %s: legs at the smaller count sum to position %d, at the larger to %d", rep, item, sum[item][false], sum[item][true])
			}
		}
	}
}

func TestPoolLegs(t *testing.T) {
	type pt struct {
		name string
		leg  int
		ops  []int
	}
	pts := []pt{{"a", 1, []int{1}}, {"x", 0, nil}, {"b", 1, []int{10}}, {"a", 2, []int{2}}, {"b", 2, []int{20}}}
	got := PoolLegs(pts, func(p pt) (string, bool) { return p.name, p.leg != 0 },
		func(p pt) pt { p.leg, p.ops = 0, slices.Clone(p.ops); return p },
		func(q *pt, p pt) { q.ops = append(q.ops, p.ops...) })
	want := []pt{{"a", 0, []int{1, 2}}, {"x", 0, nil}, {"b", 0, []int{10, 20}}}
	if !slices.EqualFunc(got, want, func(a, b pt) bool { return a.name == b.name && a.leg == b.leg && slices.Equal(a.ops, b.ops) }) {
		t.Errorf("%v, want %v", got, want)
	}
	if pts[0].leg != 1 || len(pts[0].ops) != 1 {
		t.Errorf("the first leg changed: %v", pts[0])
	}
}
