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
