package tclb_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
	"github.com/fastpath-net/fastpath/internal/datapath/pkttest"
	"github.com/fastpath-net/fastpath/internal/datapath/policymap"
)

// ring opens a reader of the env's verdict ring.
func (e *env) ring() *ringbuf.Reader {
	e.t.Helper()
	r, err := ringbuf.NewReader(e.verdicts)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { r.Close() })
	return r
}

// records reads what the ring holds now.
func records(t *testing.T, r *ringbuf.Reader) []policymap.Verdict {
	t.Helper()
	out, err := policymap.ReadVerdicts(r, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// setDropBudget writes fp_policy_config: drops_per_sec records per CPU.
func (e *env) setDropBudget(perSec uint32) {
	e.t.Helper()
	if err := e.policyConfig.Put(uint32(0), policymap.PolicyConfig{DropsPerSec: perSec}); err != nil {
		e.t.Fatal(err)
	}
}

// Every drop or reject of tc_lb writes a verdict record naming its reason
// and, where there is one, the service (rev-nat id), with the flow as the
// packet had it; from a pod's veth (an fp_endpoints entry for the test
// run's ifindex, loopback) the source is that endpoint.
func TestDropsAreRecordedWithTheirReason(t *testing.T) {
	e := newEnv(t)
	r := e.ring()
	e.setService(vip, tcp, revNatID) // no backends: rejected
	ranged := addrPort("10.96.0.12:443")
	e.setServiceValue(ranged, tcp, lbmap.ServiceValue{RevNatID: revNatID + 1, Flags: lbmap.ServiceLoadBalancer | lbmap.ServiceSourceRanges}, be1)
	e.setRanges(revNatID+1, "192.0.2.0/24")

	e.mustRun(pkttest.TCPFrame(toVIP, syn, nil), actRedirect)
	e.mustRun(pkttest.TCPFrame(pkttest.Flow{Src: client, Dst: ranged}, syn, nil), actShot)
	s := pkttest.TCPFrame(toVIP, syn, nil)
	e.mustRun(s[:len(s)-1], actShot) // transport header cut: malformed

	got := records(t, r)
	want := []struct {
		reason uint8
		cookie uint32
		dst    netip.AddrPort
	}{
		{policymap.ReasonLBNoBackend, revNatID, vip},
		{policymap.ReasonLBSourceRange, revNatID + 1, ranged},
		{policymap.ReasonLBMalformed, 0, vip},
	}
	if len(got) != len(want) {
		t.Fatalf("%d records, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		v := got[i]
		src := netip.AddrPortFrom(netip.AddrFrom16(v.Saddr).Unmap(), v.Sport)
		dst := netip.AddrPortFrom(netip.AddrFrom16(v.Daddr).Unmap(), v.Dport)
		if v.Verdict != policymap.VerdictDrop || v.Reason != w.reason || v.Cookie != w.cookie || v.Proto != tcp {
			t.Errorf("record %d: verdict %d reason %s cookie %d proto %d, want drop %s cookie %d tcp",
				i, v.Verdict, policymap.ReasonName(v.Reason), v.Cookie, v.Proto, policymap.ReasonName(w.reason), w.cookie)
		}
		if i < 2 && (src != client || dst != w.dst) {
			t.Errorf("record %d: %s -> %s, want %s -> %s", i, src, dst, client, w.dst)
		}
		if v.Endpoint != 0 || v.Dir != policymap.DirIngress || v.SrcIdentity != 9 {
			t.Errorf("record %d: endpoint %d dir %d source identity %d, want 0, ingress, world (no endpoint, empty ipcache)",
				i, v.Endpoint, v.Dir, v.SrcIdentity)
		}
	}

	// From a pod's veth: the endpoint and its identity.
	if err := e.endpoints.Put(uint32(1), policymap.Endpoint{ID: 5, Identity: 4711}); err != nil {
		t.Fatal(err)
	}
	e.mustRun(pkttest.TCPFrame(withSport(toVIP, 40002), syn, nil), actRedirect)
	got = records(t, r)
	if len(got) != 1 || got[0].Endpoint != 5 || got[0].SrcIdentity != 4711 || got[0].Dir != policymap.DirEgress ||
		got[0].Reason != policymap.ReasonLBNoBackend {
		t.Fatalf("records from a pod's veth %+v, want one no-backend record of endpoint 5, identity 4711, egress", got)
	}
}

// A flood of drops cannot fill the ring: records pass the per-CPU budget
// shared with policy (drops_per_sec), the rest are counted, while every
// packet is still dropped and counted in fp_metrics.
func TestDropRecordsKeepTheBudget(t *testing.T) {
	e := newEnv(t)
	r := e.ring()
	e.setDropBudget(3)
	s := pkttest.TCPFrame(toVIP, syn, nil)
	for i := 0; i < 10; i++ {
		e.mustRun(s[:len(s)-1], actShot)
	}
	// Ten runs take far less than the 333 ms one token takes to come back,
	// on whichever CPUs they ran; at most one refill per CPU of 2.
	got := len(records(t, r))
	if got < 3 || got > 3*2+2 {
		t.Fatalf("%d records of 10 drops with a budget of 3/s", got)
	}
	var limited uint64
	var per []uint64
	if err := e.policyMetrics.Lookup(uint32(2), &per); err != nil { // FP_PMETRIC_RATE_LIMITED
		t.Fatal(err)
	}
	for _, n := range per {
		limited += n
	}
	if int(limited)+got != 10 {
		t.Fatalf("%d records + %d rate-limited, want 10 in all", got, limited)
	}
	e.wantMetrics(map[int]uint64{metricDropMalformed: 10})
}
