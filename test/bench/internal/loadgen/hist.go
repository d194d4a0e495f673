package loadgen

import "math/bits"

// hist is a log-linear latency histogram of nanoseconds: exact below 256 ns,
// then 128 buckets per power of two (under 1 % relative error). Recording
// is an add to a fixed array, so the load generator's hot loop allocates
// nothing.
type hist struct {
	counts [histBuckets]uint64
	n      uint64
}

const (
	histSubBits = 7
	histSub     = 1 << histSubBits
	// Values up to 2^47 ns (39 hours) have a bucket; larger ones land in
	// the last.
	histBuckets = (47 - histSubBits + 1) * histSub
)

func histBucket(v uint64) int {
	if v < 2*histSub {
		return int(v)
	}
	shift := bits.Len64(v) - histSubBits - 1
	i := (shift+1)*histSub + int(v>>uint(shift)) - histSub
	if i >= histBuckets {
		return histBuckets - 1
	}
	return i
}

// histValue is the middle of bucket i.
func histValue(i int) uint64 {
	if i < 2*histSub {
		return uint64(i)
	}
	shift := i/histSub - 1
	m := uint64(i%histSub + histSub)
	return m<<uint(shift) + (uint64(1)<<uint(shift))/2
}

func (h *hist) record(ns int64) {
	if ns < 0 {
		ns = 0
	}
	h.counts[histBucket(uint64(ns))]++
	h.n++
}

func (h *hist) merge(o *hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

// quantile returns the value (ns) below which a fraction q of samples lie.
func (h *hist) quantile(q float64) uint64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n-1)) + 1
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return histValue(i)
		}
	}
	return histValue(histBuckets - 1)
}

func (h *hist) max() uint64 {
	for i := histBuckets - 1; i >= 0; i-- {
		if h.counts[i] > 0 {
			return histValue(i)
		}
	}
	return 0
}
