// Package rounds summarises a benchmark's repeated, interleaved rounds: the
// median and spread of a value, and of the ratio of two contenders measured
// back to back in the same round. On a shared machine a ratio taken round
// by round cancels the drift both sides saw, which a ratio of two medians
// taken minutes apart does not.
package rounds

import (
	"fmt"
	"math"
	"slices"
)

// Spread is the median and range of some rounds.
type Spread struct {
	Median, Min, Max float64
	N                int // rounds
}

// Of summarises values (NaN ones are skipped); N is 0 when none is left.
func Of(values []float64) Spread {
	var v []float64
	for _, x := range values {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return Spread{Median: math.NaN(), Min: math.NaN(), Max: math.NaN()}
	}
	slices.Sort(v)
	s := Spread{Min: v[0], Max: v[len(v)-1], N: len(v)}
	if len(v)%2 == 1 {
		s.Median = v[len(v)/2]
	} else {
		s.Median = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return s
}

// Ratio summarises a[r]/b[r] over the rounds r both measured (b[r] > 0).
func Ratio(a, b map[int]float64) Spread {
	var v []float64
	for r, x := range a {
		if y, ok := b[r]; ok && y > 0 {
			v = append(v, x/y)
		}
	}
	return Of(v)
}

// Percent prints a ratio spread as "93.1 % (88.0–97.2)".
func (s Spread) Percent() string {
	if s.N == 0 {
		return "–"
	}
	if s.N == 1 {
		return fmt.Sprintf("%.1f %%", 100*s.Median)
	}
	return fmt.Sprintf("%.1f %% (%.0f–%.0f)", 100*s.Median, 100*s.Min, 100*s.Max)
}

// Run is one load-generator window of a round's schedule: Leg 1 or 2 is
// Item's first or second half-window in an ABBA block with its baseline,
// Leg 0 a lone window.
type Run[T any] struct {
	Item T
	Leg  int
}

// ABBA is the block in which x and its baseline base share round rep:
// base, x, x, base in odd rounds and the mirror x, base, base, x in even
// ones, each run half a window. A round's rate of each pools its two legs
// (operations over both windows), whose mean time is the block's middle
// for both: a drift linear over the block cancels from their ratio, and
// over two rounds each of them leads the block once.
func ABBA[T any](rep int, base, x T) []Run[T] {
	b1, x1, x2, b2 := Run[T]{base, 1}, Run[T]{x, 1}, Run[T]{x, 2}, Run[T]{base, 2}
	if rep%2 == 1 {
		return []Run[T]{b1, x1, x2, b2}
	}
	return []Run[T]{x1, b1, b2, x2}
}

// Step is one stretch of a side-by-side repetition at one of two counts:
// Hi says which (the larger, else the smaller), Runs are the legs run
// there, in order.
type Step[T any] struct {
	Hi   bool
	Runs []Run[T]
}

// Paired is repetition rep's schedule for comparing a and b each at a
// smaller and a larger count, side by side: smaller (a, b), larger (a, b,
// b, a), smaller (b, a); the mirror (larger first) in even repetitions.
// Each item's two legs at one count have the same mean position as its
// two at the other, and the two switches between counts lie symmetric
// between them, so a drift linear over the repetition cancels from each
// item's ratio of the two counts.
func Paired[T any](rep int, a, b T) []Step[T] {
	out := []Step[T]{
		{false, []Run[T]{{a, 1}, {b, 1}}},
		{true, []Run[T]{{a, 1}, {b, 1}, {b, 2}, {a, 2}}},
		{false, []Run[T]{{b, 2}, {a, 2}}},
	}
	if rep%2 == 0 {
		for i := range out {
			out[i].Hi = !out[i].Hi
		}
	}
	return out
}

// PoolLegs merges each group of legs into one point in its first leg's
// place; other points pass through, in order. key names a point's group
// and says whether it is a leg at all; first makes the pooled point of a
// group's first leg (copying what merge changes in place, so the legs stay
// as they were); merge adds a later leg to it.
func PoolLegs[P any, K comparable](pts []P, key func(P) (K, bool), first func(P) P, merge func(pooled *P, leg P)) []P {
	var out []P
	at := map[K]int{}
	for _, p := range pts {
		k, leg := key(p)
		if !leg {
			out = append(out, p)
			continue
		}
		if i, ok := at[k]; ok {
			merge(&out[i], p)
			continue
		}
		at[k] = len(out)
		out = append(out, first(p))
	}
	return out
}
