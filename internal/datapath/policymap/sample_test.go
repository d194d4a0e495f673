package policymap_test

import (
	"errors"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fastpath-net/fastpath/internal/datapath/pkttest"
	"github.com/fastpath-net/fastpath/internal/datapath/policymap"
	"github.com/fastpath-net/fastpath/internal/policy"
)

// drain reads every record the ring holds now.
func (p *pe) drain() []policymap.Verdict {
	p.t.Helper()
	var out []policymap.Verdict
	for {
		p.ring.SetDeadline(time.Now().Add(50 * time.Millisecond))
		rec, err := p.ring.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return out
		}
		if err != nil {
			p.t.Fatal(err)
		}
		out = append(out, decode(p.t, rec.RawSample))
	}
}

// countAllows drains the ring and counts the allows.
func (p *pe) countAllows() (allows int) {
	for _, v := range p.drain() {
		if v.Verdict == policymap.VerdictAllow {
			allows++
		}
	}
	return allows
}

// --monitor-allow-sample N: 1 in N new flows a policy allowed writes an
// allow record (0: none, 1: every one); later packets of a flow never do.
func TestAllowSampleRate(t *testing.T) {
	p := newPE(t)
	p.setEndpoint(policymap.EnforceEgress)
	p.allow(policy.Key{Identity: policy.AnyIdentity, Dir: policy.Egress, Proto: policy.TCP, Port: 80, EndPort: 80}, 5)
	const flows = 400
	sport := uint16(1000)
	newFlows := func(sample uint32) int {
		t.Helper()
		if err := p.config.Put(uint32(0), policymap.PolicyConfig{AllowSample: sample}); err != nil {
			t.Fatal(err)
		}
		for range flows {
			sport++
			p.expect(p.egress, tcp(pod, peer, sport, 80, pkttest.SYN), tcxNext, "allowed new flow")
			p.expect(p.egress, tcp(pod, peer, sport, 80, pkttest.ACK), tcxNext, "same flow")
		}
		return p.countAllows()
	}
	if n := newFlows(0); n != 0 {
		t.Errorf("sample 0: %d allow records, want none", n)
	}
	if n := newFlows(1); n != flows {
		t.Errorf("sample 1: %d allow records, want %d (one per new flow)", n, flows)
	}
	// 1 in 4 of 400: mean 100, standard deviation 8.7; the bounds are 7
	// deviations away, so this fails only when sampling is wrong.
	if n := newFlows(4); n < 40 || n > 160 {
		t.Errorf("sample 4: %d allow records of %d new flows, want about %d", n, flows, flows/4)
	}
}

// A record keeps the time it was written, however late it is read.
func TestVerdictWallTime(t *testing.T) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	v := policymap.Verdict{TsNs: uint64(ts.Nano()) - uint64(90*time.Second)}
	if age := time.Since(v.WallTime()); age < 90*time.Second || age > 95*time.Second {
		t.Fatalf("a record written 90s ago is %s old", age)
	}
}

// New flows into a pod no ingress policy selects are recorded like
// allows, reason forwarded: every new flow (fp_policy_ct tracks the flows
// of every endpoint), a TCP flow at its SYN only; replies and later
// packets never.
func TestForwardedFlowsSampled(t *testing.T) {
	p := newPE(t)
	p.setIPCache("10.0.2.2/32", 400)
	if err := p.config.Put(uint32(0), policymap.PolicyConfig{AllowSample: 1}); err != nil {
		t.Fatal(err)
	}
	want := func(what string, n int) {
		t.Helper()
		got := p.drain()
		if len(got) != n {
			t.Fatalf("%s: %d records, want %d: %+v", what, len(got), n, got)
		}
		for _, v := range got {
			if v.Verdict != policymap.VerdictAllow || v.Reason != policymap.ReasonForwarded || v.Dir != policymap.DirIngress ||
				v.SrcIdentity != 400 || v.DstIdentity != 300 || v.Endpoint != epID || v.Dport != 80 {
				t.Errorf("%s: record %+v, want a forwarded allow 400 -> 300 on port 80", what, v)
			}
		}
	}
	// Nothing enforced.
	p.setEndpoint(0)
	p.expect(p.ingress, tcp(peer, pod, 5000, 80, pkttest.SYN), tcxNext, "SYN")
	p.expect(p.ingress, tcp(peer, pod, 5000, 80, pkttest.ACK), tcxNext, "ACK")
	p.expect(p.egress, tcp(pod, peer, 80, 5000, pkttest.SYN|pkttest.ACK), tcxNext, "SYN-ACK out")
	p.expect(p.ingress, udp(peer, pod, 5000, 80), tcxNext, "UDP")
	p.expect(p.ingress, udp(peer, pod, 5000, 80), tcxNext, "UDP again")
	want("nothing enforced", 2)
	// Egress enforced, ingress open: every new flow in, once.
	p.setEndpoint(policymap.EnforceEgress)
	p.expect(p.ingress, udp(peer, pod, 5001, 80), tcxNext, "UDP in")
	p.expect(p.ingress, udp(peer, pod, 5001, 80), tcxNext, "UDP in again")
	p.expect(p.egress, udp(pod, peer, 80, 5001), tcxNext, "UDP reply")
	want("egress enforced", 1)
	// Ingress enforced: policy decides, reason policy-allowed or denied.
	p.setEndpoint(policymap.EnforceIngress)
	p.expect(p.ingress, tcp(peer, pod, 5002, 80, pkttest.SYN), tcShot, "SYN denied")
	p.next()
}
