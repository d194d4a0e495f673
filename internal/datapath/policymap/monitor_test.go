package policymap_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/fastpath-net/fastpath/internal/datapath/pkttest"
	"github.com/fastpath-net/fastpath/internal/datapath/policymap"
	"github.com/fastpath-net/fastpath/internal/policy"
)

// TestStream: records from the kernel's ring, filtered and printed as
// `fastpathctl policy monitor` prints them.
func TestStream(t *testing.T) {
	p := newPE(t)
	p.setIPCache("10.0.2.2/32", 400)
	p.setEndpoint(policymap.EnforceEgress)
	if err := p.config.Put(uint32(0), policymap.PolicyConfig{AllowSample: 1}); err != nil { // every allow
		t.Fatal(err)
	}
	p.allow(policy.Key{Identity: 400, Dir: policy.Egress, Proto: policy.TCP, Port: 443, EndPort: 443}, 3)
	p.expect(p.egress, tcp(pod, peer, 1000, 443, pkttest.SYN), tcxNext, "allowed")
	p.expect(p.egress, tcp(pod, peer, 1001, 80, pkttest.SYN), tcShot, "denied")
	p.expect(p.egress, tcp(pod, remote, 1002, 80, pkttest.SYN), tcShot, "denied, world")

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	var got []string
	err := policymap.Stream(ctx, p.ring, policymap.Filter{DropsOnly: true, Identity: 400}, 1, func(v policymap.Verdict) error {
		got = append(got, v.String())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "DROP  egress  endpoint 7  10.0.1.1:1001 (300) -> 10.0.2.2:80 (400) tcp  policy-denied"
	if len(got) != 1 || got[0] != want {
		t.Errorf("got %q\nwant [%q]", got, want)
	}
	// The world drop is next; an endpoint filter that matches nothing ends
	// by the context.
	ctx2, cancel2 := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel2()
	n := 0
	if err := policymap.Stream(ctx2, p.ring, policymap.Filter{Endpoint: 99}, 0, func(policymap.Verdict) error { n++; return nil }); err != nil || n != 0 {
		t.Errorf("filter endpoint 99: %d records, %v", n, err)
	}
	if !strings.Contains(policymap.ReasonName(policymap.ReasonCTFull), "ct") {
		t.Error("reason name")
	}
}
