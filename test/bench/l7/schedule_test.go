package main

import (
	"testing"
	"time"
)

// TestSchedule: paced connections send at the asked rate in all, evenly
// interleaved (connection i at offset i/rate, each every conns/rate); a
// closed loop sends at once.
func TestSchedule(t *testing.T) {
	const start = int64(1_000_000)
	s := newSchedule(start, 4, 1000) // 1,000 req/s over 4 connections
	for _, c := range []struct {
		i, k int
		want time.Duration
	}{
		{0, 0, 0}, {1, 0, time.Millisecond}, {3, 0, 3 * time.Millisecond},
		{0, 1, 4 * time.Millisecond}, {2, 5, 22 * time.Millisecond},
	} {
		if got := time.Duration(s.due(c.i, c.k) - start); got != c.want {
			t.Errorf("connection %d, request %d: due at +%v, want +%v", c.i, c.k, got, c.want)
		}
	}
	closed := newSchedule(start, 4, 0)
	before := monotonic()
	if due := closed.due(3, 100); due < before || due > monotonic() {
		t.Errorf("closed loop: due %d, want now (between %d and the next reading)", due, before)
	}
}

// TestOverloaded: a paced point whose sends fell behind (too few requests
// or late sends) is flagged; closed-loop points never are.
func TestOverloaded(t *testing.T) {
	for _, c := range []struct {
		p    point
		want bool
	}{
		{point{mode: paced, offered: 1000, rate: 999, lag: 30 * time.Microsecond}, false},
		{point{mode: paced, offered: 1000, rate: 900, lag: 30 * time.Microsecond}, true},
		{point{mode: paced, offered: 1000, rate: 1000, lag: 2 * time.Millisecond}, true},
		{point{mode: closedLoop, rate: 10, lag: time.Second}, false},
	} {
		if got := c.p.overloaded(); got != c.want {
			t.Errorf("%+v: overloaded %v, want %v", c.p, got, c.want)
		}
	}
}
