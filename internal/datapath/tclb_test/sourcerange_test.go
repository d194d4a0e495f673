package tclb_test

import (
	"net/netip"
	"testing"

	"github.com/fastpath-net/fastpath/internal/datapath/ctmap"
	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
	"github.com/fastpath-net/fastpath/internal/datapath/pkttest"
)

// setRanges writes loadBalancerSourceRanges prefixes for frontend revNat.
func (e *env) setRanges(revNat uint32, prefixes ...string) {
	e.t.Helper()
	var keys []lbmap.SourceRangeKey
	var ones []uint8
	for _, p := range prefixes {
		keys = append(keys, lbmap.SourceRangeKeyOf(revNat, netip.MustParsePrefix(p)))
		ones = append(ones, 1)
	}
	if err := e.ranges.Update(keys, ones); err != nil {
		e.t.Fatal(err)
	}
}

// A frontend with FP_SVC_F_SOURCE_RANGES takes new flows only from sources
// in its own ranges (another frontend's do not count); others are dropped
// and counted, with no ct entry. An established flow keeps going when its
// range goes, as kube-proxy's firewall filters new connections only. A
// frontend without the flag ignores the map.
func TestSourceRangesFilterNewFlows(t *testing.T) {
	e := newEnv(t)
	filtered := lbmap.ServiceValue{RevNatID: revNatID, Flags: lbmap.ServiceLoadBalancer | lbmap.ServiceSourceRanges}
	e.setServiceValue(vip, tcp, filtered, be1)
	open := addrPort("10.96.0.11:80")
	e.setService(open, tcp, revNatID+1, be1)
	e.setRanges(revNatID, "10.0.0.0/30", "192.0.2.7/32")
	e.setRanges(revNatID+1, "10.0.5.0/24")
	outsider := addrPort("10.0.5.9:40000")

	wantFrame(t, e.mustRun(pkttest.TCPFrame(toVIP, syn, nil), actOK), pkttest.TCPFrame(to(be1.addr), syn, nil))
	fromOutsider := pkttest.Flow{Src: outsider, Dst: vip}
	e.mustRun(pkttest.TCPFrame(fromOutsider, syn, nil), actShot)
	e.mustRun(pkttest.TCPFrame(pkttest.Flow{Src: addrPort("192.0.2.7:5000"), Dst: vip}, syn, nil), actOK)
	e.mustRun(pkttest.TCPFrame(pkttest.Flow{Src: addrPort("192.0.2.8:5000"), Dst: vip}, syn, nil), actShot)
	if _, ok, _ := e.ct.Lookup(ctKey(fromOutsider, tcp, ctmap.Forward)); ok {
		t.Error("a dropped flow has a ct entry")
	}
	// The open frontend takes the outsider.
	e.mustRun(pkttest.TCPFrame(pkttest.Flow{Src: outsider, Dst: open}, syn, nil), actOK)

	// The range goes: the established flow goes on, a new one is dropped.
	if err := e.ranges.Delete([]lbmap.SourceRangeKey{lbmap.SourceRangeKeyOf(revNatID, netip.MustParsePrefix("10.0.0.0/30"))}); err != nil {
		t.Fatal(err)
	}
	wantFrame(t, e.mustRun(pkttest.TCPFrame(toVIP, ack, []byte("x")), actOK), pkttest.TCPFrame(to(be1.addr), ack, []byte("x")))
	e.mustRun(pkttest.TCPFrame(withSport(toVIP, 40001), syn, nil), actShot)
	e.wantMetrics(map[int]uint64{metricForwardNew: 3, metricForwardCT: 1, metricDropSourceRange: 3})
}
