package main

import (
	"slices"
	"time"
)

// quantile is the nearest-rank q-quantile of samples (0 when empty).
func quantile(samples []time.Duration, q float64) time.Duration {
	if len(samples) == 0 {
		return 0
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	rank := int(q*float64(len(s)) + 0.999999)
	rank = min(max(rank, 1), len(s))
	return s[rank-1]
}

// cpuPerChange is the CPU time a proxy spent per change over a window of
// wall time, raw and net of what it spends idle (idleRate: CPU seconds per
// second measured before the changes). The net figure is never negative.
func cpuPerChange(cpu, window time.Duration, changes int, idleRate float64) (raw, net time.Duration) {
	if changes <= 0 {
		return 0, 0
	}
	raw = cpu / time.Duration(changes)
	idle := time.Duration(idleRate * float64(window))
	net = max(0, cpu-idle) / time.Duration(changes)
	return raw, net
}
