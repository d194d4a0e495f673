package tclb_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/fastpath-net/fastpath/internal/datapath/ctmap"
	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
	"github.com/fastpath-net/fastpath/internal/datapath/pkttest"
)

// Tuple clashes: two services that share a backend. client:40000 -> vip and
// client:40000 -> vipB both become client:40000 -> be1 at the backend.
var (
	vipB      = addrPort("10.96.0.20:443")
	revNatIDB = uint32(8)
	toVIPB    = pkttest.Flow{Src: client, Dst: vipB}
)

// clashEnv loads the internal-role program with the port range [min, max]
// and no masquerade address: nothing is masqueraded, a clash still gets a
// port from the range, and only from it (the clash ports after it are
// switched off, so that it can run out). vip and vipB both have be1 as
// their only backend.
func clashEnv(t *testing.T, min, max uint16) *env {
	t.Helper()
	return clashEnvWith(t, min, max, 0, 0)
}

// clashEnvWith is clashEnv with the clash ports [cmin, cmax] after the
// range (fp_clash_port_min/max; 0: none).
func clashEnvWith(t *testing.T, min, max, cmin, cmax uint16) *env {
	t.Helper()
	e := newEnvWith(t, func(spec *ebpf.CollectionSpec) {
		for name, v := range map[string]uint16{"fp_clash_port_min": cmin, "fp_clash_port_max": cmax} {
			if err := spec.Variables[name].Set(v); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
	})
	cfg := lbmap.Config{SnatPortMin: min, SnatPortMax: max}
	if err := e.config.Update(uint32(0), &cfg, 0); err != nil {
		t.Fatal(err)
	}
	e.setService(vip, tcp, revNatID, be1)
	e.setService(vipB, tcp, revNatIDB, be1)
	e.setService(vip, udp, revNatID, be1)
	e.setService(vipB, udp, revNatIDB, be1)
	e.setService(vip, sctp, revNatID, be1)
	e.setService(vipB, sctp, revNatIDB, be1)
	return e
}

// closeTCP runs a whole TCP connection of client c through frontend fe to
// backend b, the backend closing first as an HTTP server does: handshake,
// FIN from the backend, FIN from the client, the backend's last ACK (it
// enters TIME_WAIT).
func closeTCP(t *testing.T, e *env, fe, b netip.AddrPort, c netip.AddrPort) {
	t.Helper()
	in, back := pkttest.Flow{Src: c, Dst: fe}, pkttest.Flow{Src: b, Dst: c}
	wantFrame(t, e.mustRun(pkttest.TCPFrame(in, syn, nil), actOK), pkttest.TCPFrame(pkttest.Flow{Src: c, Dst: b}, syn, nil))
	for _, s := range []struct {
		f     pkttest.Flow
		flags uint8
	}{{back, syn | ack}, {in, ack}, {back, fin | ack}, {in, fin | ack}, {back, ack}} {
		e.mustRun(pkttest.TCPFrame(s.f, s.flags, nil), actOK)
	}
	rep := e.ctEntry(ctKey(back, tcp, ctmap.Reply))
	if rep.Flags != ctmap.SeenReply|ctmap.Closing {
		t.Fatalf("REPLY entry after the close: %+v", rep)
	}
}

// frame builds a first packet of proto for f.
func frame(proto uint8, f pkttest.Flow, flags uint8) []byte {
	switch proto {
	case udp:
		return pkttest.UDPFrame(f, []byte("query"))
	case sctp:
		return pkttest.SCTPFrame(f, []byte("sixteen byte chk"), false)
	}
	return pkttest.TCPFrame(f, flags, nil)
}

// portOfItsOwn checks that out is client -> be1 from a port of the range
// other than the client's and returns that port.
func portOfItsOwn(t *testing.T, out []byte, min, max uint16) uint16 {
	t.Helper()
	p, err := pkttest.Parse(out)
	if err != nil {
		t.Fatal(err)
	}
	if p.IP.Src != client.Addr() || p.SrcPort < min || p.SrcPort > max || p.Dst() != be1.addr {
		t.Fatalf("sent %v -> %v, want %v with a port in %d-%d -> %v\nframe: %x", p.Src(), p.Dst(), client.Addr(), min, max, be1.addr, out)
	}
	return p.SrcPort
}

// The bug the benchmark found: after client:40000 -> vip -> be1 closed (be1
// holds the tuple in TIME_WAIT), client:40000 -> vipB -> be1 would be the
// same tuple at be1, whose PAWS check drops the SYN. The new flow gets a
// source port of its own, keeps the client's address, goes to the stack,
// and its replies get the client's port and vipB back.
func TestClashWithATimeWaitTupleGetsAPortOfItsOwn(t *testing.T) {
	const min, max = 61000, 61003
	e := clashEnv(t, min, max)
	closeTCP(t, e, vip, be1.addr, client)
	tombstone := ctKey(from(be1.addr), tcp, ctmap.Reply)
	before := e.ctEntry(tombstone)
	if left := float64(int64(before.Expires-bootNow(t))) / 1e9; left < lifeTCPTimeWait-5 {
		t.Errorf("closed flow's REPLY entry expires in %.1fs, want about %ds (TIME_WAIT)", left, lifeTCPTimeWait)
	}

	in := pkttest.TCPFrame(toVIPB, syn, nil)
	out := e.mustRun(in, actOK)
	port := portOfItsOwn(t, out, min, max)
	own := netip.AddrPortFrom(client.Addr(), port)
	toBackend := pkttest.Flow{Src: own, Dst: be1.addr}
	wantFrame(t, out, pkttest.TCPFrame(toBackend, syn, nil))

	fwd := e.ctEntry(ctKey(toVIPB, tcp, ctmap.Forward))
	if fwd.Flags != ctmap.SNAT|ctmap.SNATPort || fwd.SnatAddr != lbmap.AddrFrom(client.Addr()) || fwd.SnatPort != port ||
		fwd.NatAddr != lbmap.AddrFrom(be1.addr.Addr()) || fwd.NatPort != be1.addr.Port() || fwd.RevNatID != revNatIDB ||
		fwd.Packets != 1 || fwd.Bytes != uint64(len(in)) {
		t.Errorf("FORWARD entry %+v", fwd)
	}
	repKey := ctKey(toBackend.Reverse(), tcp, ctmap.Reply)
	rep := e.ctEntry(repKey)
	if rep.Flags != ctmap.SNAT|ctmap.SNATPort || rep.SnatAddr != lbmap.AddrFrom(client.Addr()) || rep.SnatPort != client.Port() ||
		rep.NatAddr != lbmap.AddrFrom(vipB.Addr()) || rep.NatPort != vipB.Port() || rep.RevNatID != revNatIDB {
		t.Errorf("REPLY entry %+v", rep)
	}
	if twin := ctmap.Twin(repKey, rep); twin != ctKey(toVIPB, tcp, ctmap.Forward) {
		t.Errorf("ctmap.Twin of the REPLY entry is %v", twin)
	}
	// The tombstone is left as it was: it is still be1's TIME_WAIT tuple.
	if got := e.ctEntry(tombstone); got != before {
		t.Errorf("tombstone changed: %+v, was %+v", got, before)
	}

	// Replies come back from vipB to the client's own port; later packets
	// keep the flow's port.
	wantFrame(t, e.mustRun(pkttest.TCPFrame(toBackend.Reverse(), syn|ack, nil), actOK), pkttest.TCPFrame(toVIPB.Reverse(), syn|ack, nil))
	wantFrame(t, e.mustRun(pkttest.TCPFrame(toVIPB, ack, []byte("GET /")), actOK), pkttest.TCPFrame(toBackend, ack, []byte("GET /")))
	wantFrame(t, e.mustRun(pkttest.TCPFrame(toBackend.Reverse(), ack, []byte("odd")), actOK), pkttest.TCPFrame(toVIPB.Reverse(), ack, []byte("odd")))
	// closeTCP's 6 packets, then 1 new, 1 established, 2 replies.
	e.wantMetrics(map[int]uint64{metricForwardNew: 2, metricForwardCT: 3, metricReplyRevNat: 5})
}

// Two flows at once from one client port (unconnected UDP sockets and
// SO_REUSEADDR allow it) to two frontends of one backend: the second gets a
// port of its own, and each one's replies come back from its own frontend,
// for every protocol. Before, the second took over the REPLY entry and the
// first flow's replies came from the second frontend.
func TestClashWithALiveFlowKeepsBothFlowsApart(t *testing.T) {
	const min, max = 61000, 65535
	for _, proto := range []uint8{tcp, udp, sctp} {
		t.Run(lbmap.ProtoName(proto), func(t *testing.T) {
			e := clashEnv(t, min, max)
			wantFrame(t, e.mustRun(frame(proto, toVIP, syn), actOK), frame(proto, to(be1.addr), syn))
			out := e.mustRun(frame(proto, toVIPB, syn), actOK)
			own := netip.AddrPortFrom(client.Addr(), portOfItsOwn(t, out, min, max))
			wantFrame(t, out, frame(proto, pkttest.Flow{Src: own, Dst: be1.addr}, syn))

			wantFrame(t, e.mustRun(frame(proto, from(be1.addr), syn|ack), actOK), frame(proto, from(vip), syn|ack))
			wantFrame(t, e.mustRun(frame(proto, pkttest.Flow{Src: be1.addr, Dst: own}, syn|ack), actOK), frame(proto, from(vipB), syn|ack))
			if n := e.ctLen(); n != 4 {
				t.Errorf("%d ct entries, want 4", n)
			}
		})
	}
}

// ICMP errors about a flow with a port of its own are translated like its
// packets: one from the backend quotes client:port -> be1 and reaches the
// client about client:40000 -> vipB; one the client sends about a reply
// reaches the backend about be1 -> client:port.
func TestICMPErrorsAboutAFlowWithAPortOfItsOwn(t *testing.T) {
	e := clashEnv(t, 61000, 65535)
	e.mustRun(pkttest.TCPFrame(toVIP, syn, nil), actOK)
	first := pkttest.TCPFrame(toVIPB, syn, []byte("payload beyond the quote"))
	sent := e.mustRun(first, actOK)
	own := netip.AddrPortFrom(client.Addr(), portOfItsOwn(t, sent, 61000, 65535))

	in := pkttest.ICMPErrorFrame(be1.addr.Addr(), client.Addr(), pkttest.ICMPDestUnreach, pkttest.ICMPCodeFragNeeded, mtu, ipOf(sent))
	want := pkttest.ICMPErrorFrame(vipB.Addr(), client.Addr(), pkttest.ICMPDestUnreach, pkttest.ICMPCodeFragNeeded, mtu, ipOf(first))
	wantFrame(t, e.mustRun(in, actOK), want)

	backendReply := pkttest.TCPFrame(pkttest.Flow{Src: be1.addr, Dst: own}, syn|ack, []byte("a large reply"))
	seen := e.mustRun(backendReply, actOK)
	in = pkttest.ICMPErrorFrame(client.Addr(), vipB.Addr(), pkttest.ICMPDestUnreach, pkttest.ICMPCodeFragNeeded, mtu, ipOf(seen))
	want = pkttest.ICMPErrorFrame(client.Addr(), be1.addr.Addr(), pkttest.ICMPDestUnreach, pkttest.ICMPCodeFragNeeded, mtu, ipOf(backendReply))
	wantFrame(t, e.mustRun(in, actOK), want)
}

// What is no clash: the same frontend again from the same port after a
// close (the client's timestamps towards it only grow: the backend takes the
// tuple out of TIME_WAIT), whether the closed flow's FORWARD entry is still
// there (reopen) or gone (the GC let it go before the tombstone); a REPLY
// entry of another frontend's flow that expired with its flow.
func TestNoClash(t *testing.T) {
	e := clashEnv(t, 61000, 65535)
	closeTCP(t, e, vip, be1.addr, client)
	wantFrame(t, e.mustRun(pkttest.TCPFrame(toVIP, syn, nil), actOK), pkttest.TCPFrame(to(be1.addr), syn, nil))
	if fwd := e.ctEntry(ctKey(toVIP, tcp, ctmap.Forward)); fwd.Flags != 0 || fwd.Packets != 1 {
		t.Errorf("reopened FORWARD entry %+v", fwd)
	}
	if rep := e.ctEntry(ctKey(from(be1.addr), tcp, ctmap.Reply)); rep.Flags != 0 || rep.NatAddr != lbmap.AddrFrom(vip.Addr()) {
		t.Errorf("reopened REPLY entry %+v", rep)
	}

	other := withSport(toVIP, 40001)
	closeTCP(t, e, vip, be1.addr, other.Src)
	if err := e.ct.Delete([]ctmap.Key{ctKey(other, tcp, ctmap.Forward)}); err != nil {
		t.Fatal(err)
	}
	wantFrame(t, e.mustRun(pkttest.TCPFrame(other, syn, nil), actOK), pkttest.TCPFrame(pkttest.Flow{Src: other.Src, Dst: be1.addr}, syn, nil))

	// A dead flow of vip's (both entries expired) is no clash for vipB.
	f := withSport(toVIP, 40002)
	e.mustRun(pkttest.UDPFrame(f, []byte("q")), actOK)
	expire(t, e, ctKey(f, udp, ctmap.Forward), ctKey(pkttest.Flow{Src: be1.addr, Dst: f.Src}, udp, ctmap.Reply))
	g := pkttest.Flow{Src: f.Src, Dst: vipB}
	wantFrame(t, e.mustRun(pkttest.UDPFrame(g, []byte("q")), actOK), pkttest.UDPFrame(pkttest.Flow{Src: f.Src, Dst: be1.addr}, []byte("q")))
	if rep := e.ctEntry(ctKey(pkttest.Flow{Src: be1.addr, Dst: f.Src}, udp, ctmap.Reply)); rep.NatAddr != lbmap.AddrFrom(vipB.Addr()) || rep.Flags != 0 {
		t.Errorf("REPLY entry after a dead flow's: %+v", rep)
	}

	// A flow quiet in the backend's direction (its REPLY entry expired, its
	// FORWARD entry not) is alive: a clash.
	h := withSport(toVIP, 40003)
	e.mustRun(pkttest.UDPFrame(h, []byte("q")), actOK)
	expire(t, e, ctKey(pkttest.Flow{Src: be1.addr, Dst: h.Src}, udp, ctmap.Reply))
	out := e.mustRun(pkttest.UDPFrame(pkttest.Flow{Src: h.Src, Dst: vipB}, []byte("q")), actOK)
	portOfItsOwn(t, out, 61000, 65535)
}

// expire sets the expiry of ct entries to a second ago.
func expire(t *testing.T, e *env, keys ...ctmap.Key) {
	t.Helper()
	for _, k := range keys {
		v := e.ctEntry(k)
		v.Expires = bootNow(t) - second
		if err := e.ct.Update([]ctmap.Key{k}, []ctmap.Entry{v}); err != nil {
			t.Fatal(err)
		}
	}
}

// Without a free port the clashing flow is dropped and counted, with
// nothing recorded: its tuple would be dropped by the backend, or take
// another flow's replies. The client's SYN retransmission tries again.
func TestClashWithoutAFreePortIsDropped(t *testing.T) {
	e := clashEnv(t, 61000, 61000)
	e.mustRun(pkttest.TCPFrame(toVIP, syn, nil), actOK)
	e.mustRun(pkttest.TCPFrame(toVIPB, syn, nil), actOK)
	e.setService(addrPort("10.96.0.20:8443"), tcp, 9, be1)
	third := pkttest.Flow{Src: client, Dst: addrPort("10.96.0.20:8443")}
	e.mustRun(pkttest.TCPFrame(third, syn, nil), actShot)
	if _, ok, _ := e.ct.Lookup(ctKey(third, tcp, ctmap.Forward)); ok {
		t.Error("a dropped flow has a FORWARD entry")
	}
	if n := e.ctLen(); n != 4 {
		t.Errorf("%d ct entries, want the 4 of the first two flows", n)
	}
	e.wantMetrics(map[int]uint64{metricForwardNew: 2, metricDropSNATNoPort: 1})

	// An fp_config without a port range (never written) has no port.
	e2 := clashEnv(t, 0, 0)
	e2.mustRun(pkttest.TCPFrame(toVIP, syn, nil), actOK)
	e2.mustRun(pkttest.TCPFrame(toVIPB, syn, nil), actShot)
	e2.wantMetrics(map[int]uint64{metricForwardNew: 1, metricDropSNATNoPort: 1})
}

// A flow with a port of its own that is reopened (a SYN after its close)
// is balanced again. be1 holds its old port in TIME_WAIT, and only the same
// connection (client:40000 -> vipB) sends SYNs there whose timestamps are
// newer than its last ones (Linux offsets them by a hash of the four-tuple):
// while the old flow's last reply is under 2 ms old, the reopened flow gets
// the other port of a two-port range and the old REPLY entry stays; later
// it takes its old port back; another connection to vipB never does, and
// with both ports held it is dropped.
func TestReopenedFlowWithAPortOfItsOwnTakesItBackLater(t *testing.T) {
	const min, max = 61000, 61001
	e := clashEnv(t, min, max)
	closeTCP(t, e, vip, be1.addr, client)
	first := closeOwn(t, e, toVIPB, min, max)
	tombstone := ctKey(pkttest.Flow{Src: be1.addr, Dst: netip.AddrPortFrom(client.Addr(), first)}, tcp, ctmap.Reply)
	lastReplyAt(t, e, tombstone, 0)

	second := portOfItsOwn(t, e.mustRun(pkttest.TCPFrame(toVIPB, syn, nil), actOK), min, max)
	if second == first {
		t.Fatalf("reopened flow got port %d again while its last reply is fresh", first)
	}
	if old := e.ctEntry(tombstone); old.Flags&ctmap.Closing == 0 {
		t.Errorf("the old REPLY entry was replaced: %+v", old)
	}
	own := pkttest.Flow{Src: netip.AddrPortFrom(client.Addr(), second), Dst: be1.addr}
	closeFlow(t, e, toVIPB, own)

	// Both ports held by closed flows of client:40000 -> vipB, a second ago.
	for _, p := range []uint16{first, second} {
		lastReplyAt(t, e, ctKey(pkttest.Flow{Src: be1.addr, Dst: netip.AddrPortFrom(client.Addr(), p)}, tcp, ctmap.Reply), time.Second)
	}
	other := withSport(toVIP, 40001)
	closeTCP(t, e, vip, be1.addr, other.Src)
	e.mustRun(pkttest.TCPFrame(pkttest.Flow{Src: other.Src, Dst: vipB}, syn, nil), actShot)

	again := portOfItsOwn(t, e.mustRun(pkttest.TCPFrame(toVIPB, syn, nil), actOK), min, max)
	rep := e.ctEntry(ctKey(pkttest.Flow{Src: be1.addr, Dst: netip.AddrPortFrom(client.Addr(), again)}, tcp, ctmap.Reply))
	if rep.Flags != ctmap.SNAT|ctmap.SNATPort || rep.SnatPort != client.Port() || rep.NatAddr != lbmap.AddrFrom(vipB.Addr()) {
		t.Errorf("taken-back REPLY entry %+v", rep)
	}
	wantFrame(t, e.mustRun(pkttest.TCPFrame(pkttest.Flow{Src: be1.addr, Dst: netip.AddrPortFrom(client.Addr(), again)}, syn|ack, nil), actOK),
		pkttest.TCPFrame(toVIPB.Reverse(), syn|ack, nil))
}

// closeOwn opens a flow through fe that clashes and so gets a port of its
// own, closes it as closeTCP does, and returns the port.
func closeOwn(t *testing.T, e *env, in pkttest.Flow, min, max uint16) uint16 {
	t.Helper()
	port := portOfItsOwn(t, e.mustRun(pkttest.TCPFrame(in, syn, nil), actOK), min, max)
	closeFlow(t, e, in, pkttest.Flow{Src: netip.AddrPortFrom(client.Addr(), port), Dst: be1.addr})
	return port
}

// closeFlow runs the rest of flow in (own: its tuple at the backend) after
// its SYN: handshake, then the backend closing first.
func closeFlow(t *testing.T, e *env, in, own pkttest.Flow) {
	t.Helper()
	for _, s := range []struct {
		f     pkttest.Flow
		flags uint8
	}{{own.Reverse(), syn | ack}, {in, ack}, {own.Reverse(), fin | ack}, {in, fin | ack}, {own.Reverse(), ack}} {
		e.mustRun(pkttest.TCPFrame(s.f, s.flags, nil), actOK)
	}
}

// lastReplyAt makes closed REPLY entry k look as if its last packet went
// through ago before now (0: a second in the future, surely fresh).
func lastReplyAt(t *testing.T, e *env, k ctmap.Key, ago time.Duration) {
	t.Helper()
	v := e.ctEntry(k)
	v.Expires = bootNow(t) + lifeTCPTimeWait*second - uint64(ago)
	if ago == 0 {
		v.Expires += second
	}
	if err := e.ct.Update([]ctmap.Key{k}, []ctmap.Entry{v}); err != nil {
		t.Fatal(err)
	}
}

// With the clash ports on (the default), clashes get ports from them too:
// 1024-32767, below the client's ephemeral ports. With a one-port range the
// second clash is not dropped, as it is without them
// (TestClashWithoutAFreePortIsDropped).
func TestClashPortsComeAfterTheRange(t *testing.T) {
	e := clashEnvWith(t, 61000, 61000, 1024, 32767)
	e.mustRun(pkttest.TCPFrame(toVIP, syn, nil), actOK)
	e.mustRun(pkttest.TCPFrame(toVIPB, syn, nil), actOK)
	e.setService(addrPort("10.96.0.20:8443"), tcp, 9, be1)
	third := pkttest.Flow{Src: client, Dst: addrPort("10.96.0.20:8443")}
	ports := map[uint16]bool{}
	for _, f := range []pkttest.Flow{toVIPB, third} {
		k := ctKey(f, tcp, ctmap.Forward)
		if _, ok, _ := e.ct.Lookup(k); !ok {
			e.mustRun(pkttest.TCPFrame(f, syn, nil), actOK)
		}
		ports[e.ctEntry(k).SnatPort] = true
	}
	if len(ports) != 2 {
		t.Fatalf("ports %v, want two", ports)
	}
	for p := range ports {
		if p != 61000 && (p < 1024 || p > 32767) {
			t.Errorf("port %d is neither the range's nor a clash port", p)
		}
	}
	e.wantMetrics(map[int]uint64{metricForwardNew: 3})
}
