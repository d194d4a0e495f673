package main

import "time"

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
