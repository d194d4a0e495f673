package tclb_test

import (
	"net/netip"
	"testing"

	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
	"github.com/fastpath-net/fastpath/internal/datapath/pkttest"
)

// egressEnv is masqEnv with egress masquerade on: the cluster CIDR holds
// pod (10.0.3.0/24) and client is a node address.
func egressEnv(t *testing.T) (*env, pkttest.MAC) {
	t.Helper()
	e, mac := masqEnv(t, roleInternal, portMin, portMax)
	cfg := lbmap.Config{MasqAddr: lbmap.AddrFrom(masqIP), SnatPortMin: portMin, SnatPortMax: portMax, Flags: lbmap.ConfigEgressMasq}
	if err := e.config.Update(uint32(0), &cfg, 0); err != nil {
		t.Fatal(err)
	}
	for p, kind := range map[netip.Prefix]uint8{
		netip.MustParsePrefix("10.0.3.0/24"): lbmap.NoMasqCluster,
		netip.PrefixFrom(client.Addr(), 32):  lbmap.NoMasqNode,
	} {
		if err := e.noMasq.Update(lbmap.CIDRKeyFrom(p), kind, 0); err != nil {
			t.Fatal(err)
		}
	}
	return e, mac
}

// A pod's new flow to an address outside the cluster leaves with the
// masquerade address and a port of its own; the reply goes back to the
// pod with only its destination translated, and later packets keep the
// port.
func TestEgressLeavingTheClusterIsMasqueraded(t *testing.T) {
	for _, proto := range []uint8{tcp, udp} {
		e, mac := egressEnv(t)
		out := be1.addr // no Service: an address outside the cluster
		flow := pkttest.Flow{Src: pod, Dst: out}
		frame := func(f pkttest.Flow, flags uint8) []byte {
			if proto == udp {
				return pkttest.UDPFrame(f, []byte("query"))
			}
			return pkttest.TCPFrame(f, flags, nil)
		}
		sentFrame := e.mustRun(frame(flow, syn), actRedirect)
		port := sent(t, sentFrame, portMin, portMax)
		leaving := pkttest.Flow{Src: masq(port), Dst: out}
		wantFrame(t, sentFrame, pkttest.Forwarded(frame(leaving, syn), neighMAC, mac))

		wantFrame(t, e.mustRun(frame(leaving.Reverse(), syn|ack), actOK), frame(flow.Reverse(), syn|ack))
		again := e.mustRun(frame(flow, ack), actRedirect)
		wantFrame(t, again, pkttest.Forwarded(frame(leaving, ack), neighMAC, mac))
		e.wantMetrics(map[int]uint64{metricForwardNew: 1, metricForwardCT: 1, metricReplyRevNat: 1})
	}
}

// Not masqueraded: traffic inside the cluster, to a node's address, a TCP
// packet that starts no connection (the SYN-ACK of a connection from
// outside), and anything while the flag is off.
func TestEgressMasqueradeLeavesOtherTraffic(t *testing.T) {
	e, _ := egressEnv(t)
	for name, f := range map[string][]byte{
		"inside the cluster":    pkttest.TCPFrame(pkttest.Flow{Src: pod, Dst: addrPort("10.0.3.9:80")}, syn, nil),
		"to a node":             pkttest.TCPFrame(pkttest.Flow{Src: pod, Dst: client}, syn, nil),
		"answer to an outsider": pkttest.TCPFrame(pkttest.Flow{Src: pod, Dst: be1.addr}, syn|ack, nil),
		"from no pod":           pkttest.TCPFrame(pkttest.Flow{Src: addrPort("10.0.4.4:5000"), Dst: be1.addr}, syn, nil),
	} {
		if out := e.mustRun(f, actOK); string(out) != string(f) {
			t.Errorf("%s: packet changed", name)
		}
	}
	cfg := lbmap.Config{MasqAddr: lbmap.AddrFrom(masqIP), SnatPortMin: portMin, SnatPortMax: portMax}
	if err := e.config.Update(uint32(0), &cfg, 0); err != nil {
		t.Fatal(err)
	}
	f := pkttest.TCPFrame(pkttest.Flow{Src: pod, Dst: be1.addr}, syn, nil)
	if out := e.mustRun(f, actOK); string(out) != string(f) {
		t.Error("flag off: packet changed")
	}
	if n := e.ctLen(); n != 0 {
		t.Errorf("%d ct entries, want none", n)
	}
}
