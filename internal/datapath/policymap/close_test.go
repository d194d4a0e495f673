package policymap_test

import (
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fastpath-net/fastpath/internal/datapath/pkttest"
	"github.com/fastpath-net/fastpath/internal/datapath/policymap"
	"github.com/fastpath-net/fastpath/internal/policy"
)

// TestCTClose: a RST marks both ct entries of the flow closing with the
// 10 s lifetime (an open flow's entries live 6 h), and drops are counted.
func TestCTClose(t *testing.T) {
	p := newPE(t)
	p.setIPCache("10.0.2.2/32", 400)
	p.setEndpoint(policymap.EnforceEgress)
	p.allow(policy.Key{Identity: 400, Dir: policy.Egress, Proto: policy.TCP, Port: 80, EndPort: 80}, 1)
	p.expect(p.egress, tcp(pod, peer, 1000, 80, pkttest.SYN), tcxNext, "allowed")
	entries := func() (n int, longest time.Duration, closing int) {
		t.Helper()
		var ts unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
			t.Fatal(err)
		}
		now := uint64(ts.Nano())
		var k policymap.CTKey
		var v policymap.CTValue
		it := p.ct.Iterate()
		for it.Next(&k, &v) {
			n++
			if d := time.Duration(v.Expires - now); d > longest {
				longest = d
			}
			if v.Flags&policymap.CTClosing != 0 {
				closing++
			}
		}
		return n, longest, closing
	}
	if n, longest, closing := entries(); n != 2 || longest < time.Hour || closing != 0 {
		t.Fatalf("open flow: %d entries, longest %v, %d closing", n, longest, closing)
	}
	p.expect(p.ingress, tcp(peer, pod, 80, 1000, pkttest.RST), tcxNext, "RST from the peer")
	if n, longest, closing := entries(); n != 2 || longest > 10*time.Second || closing != 2 {
		t.Errorf("after RST: %d entries, longest %v, %d closing; want 2, <= 10s, 2", n, longest, closing)
	}
	// A later packet of the flow does not extend it again.
	p.expect(p.egress, tcp(pod, peer, 1000, 80, pkttest.ACK), tcxNext, "late ACK")
	if _, longest, _ := entries(); longest > 10*time.Second {
		t.Errorf("late packet extended a closing entry to %v", longest)
	}

	p.expect(p.egress, tcp(pod, peer, 1001, 81, pkttest.SYN), tcShot, "denied")
	if n := p.counter(policymap.MetricDropped); n != 1 {
		t.Errorf("dropped counter %d, want 1", n)
	}
}

// TestDropBudget: with a budget of 2 drop records per second per CPU, a
// burst of 5 drops writes 2 records and counts 3 as rate-limited; every
// packet is still dropped.
func TestDropBudget(t *testing.T) {
	p := newPE(t)
	// The budget is per CPU: run every packet on one CPU, or a thread
	// moving between CPUs would find a fresh bucket. Never unlocked: the
	// pinned thread exits with the test's goroutine instead of returning
	// to the scheduler with its affinity.
	runtime.LockOSThread()
	var one unix.CPUSet
	one.Set(0)
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		t.Fatal(err)
	}
	p.setEndpoint(policymap.EnforceEgress)
	if err := p.config.Put(uint32(0), policymap.PolicyConfig{DropsPerSec: 2}); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		p.expect(p.egress, tcp(pod, peer, uint16(2000+i), 80, pkttest.SYN), tcShot, "denied")
	}
	p.next()
	p.next()
	p.noRecord()
	if n := p.counter(policymap.MetricRateLimited); n != 3 {
		t.Errorf("rate-limited counter %d, want 3", n)
	}
	if n := p.counter(policymap.MetricDropped); n != 5 {
		t.Errorf("dropped counter %d, want 5", n)
	}
}

func (p *pe) counter(idx uint32) uint64 {
	p.t.Helper()
	var perCPU []uint64
	if err := p.metrics.Lookup(idx, &perCPU); err != nil {
		p.t.Fatal(err)
	}
	var sum uint64
	for _, c := range perCPU {
		sum += c
	}
	return sum
}
