package tclb_test

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/fastpath-net/fastpath/internal/datapath/ctmap"
	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
	"github.com/fastpath-net/fastpath/internal/datapath/pkttest"
)

func TestTCPSYNIsDNATedToTheOnlyBackend(t *testing.T) {
	e := newEnv(t)
	e.setService(vip, tcp, revNatID, be1)

	in := pkttest.TCPFrame(toVIP, syn, nil)
	out := e.mustRun(in, actOK)
	wantFrame(t, out, pkttest.TCPFrame(to(be1.addr), syn, nil))

	fwd := e.ctEntry(ctKey(toVIP, tcp, ctmap.Forward))
	if fwd.NatAddr != lbmap.AddrFrom(be1.addr.Addr()) || fwd.NatPort != be1.addr.Port() ||
		fwd.RevNatID != revNatID || fwd.BackendID != be1.id || fwd.Flags != 0 ||
		fwd.Packets != 1 || fwd.Bytes != uint64(len(in)) {
		t.Errorf("FORWARD entry %+v", fwd)
	}
	rep := e.ctEntry(ctKey(from(be1.addr), tcp, ctmap.Reply))
	if rep.NatAddr != lbmap.AddrFrom(vip.Addr()) || rep.NatPort != vip.Port() ||
		rep.RevNatID != revNatID || rep.BackendID != be1.id || rep.Flags != 0 || rep.Packets != 0 {
		t.Errorf("REPLY entry %+v", rep)
	}
	if n := e.ctLen(); n != 2 {
		t.Errorf("%d ct entries, want 2", n)
	}
	e.wantMetrics(map[int]uint64{metricForwardNew: 1})
	if m := e.metricsNow()[metricForwardNew]; m.Bytes != uint64(len(in)) {
		t.Errorf("FORWARD_NEW bytes %d, want %d", m.Bytes, len(in))
	}
}

// Payloads of odd length put the last checksum word half in the padding.
func TestTCPWithPayloadKeepsChecksumsValid(t *testing.T) {
	e := newEnv(t)
	e.setService(vip, tcp, revNatID, be1)
	for _, payload := range []string{"", "a", "GET / HTTP/1.1\r\n\r\n", string(make([]byte, 1401))} {
		f := withSport(toVIP, uint16(41000+len(payload)))
		out := e.mustRun(pkttest.TCPFrame(f, ack|pkttest.PSH, []byte(payload)), actOK)
		wantFrame(t, out, pkttest.TCPFrame(pkttest.Flow{Src: f.Src, Dst: be1.addr}, ack|pkttest.PSH, []byte(payload)))
	}
}

func TestIPOptionsAreSkipped(t *testing.T) {
	e := newEnv(t)
	e.setService(vip, tcp, revNatID, be1)
	opts := []byte{0x01, 0x01, 0x01, 0x00} // NOP NOP NOP EOL
	frame := func(f pkttest.Flow) []byte {
		seg := pkttest.TCP{SrcPort: f.Src.Port(), DstPort: f.Dst.Port(), Seq: 1, Flags: syn}.Marshal(f.Src.Addr(), f.Dst.Addr(), []byte("x"))
		ip := pkttest.IPv4{Src: f.Src.Addr(), Dst: f.Dst.Addr(), Proto: tcp, ID: 9, Options: opts}
		return pkttest.Ether(pkttest.NodeMAC, pkttest.PeerMAC, pkttest.EtherTypeIPv4, ip.Marshal(seg))
	}
	out := e.mustRun(frame(toVIP), actOK)
	wantFrame(t, out, frame(to(be1.addr)))
	out = e.mustRun(frame(from(be1.addr)), actOK)
	wantFrame(t, out, frame(from(vip)))
}

func TestRandomSelectionSpreadsOverBackends(t *testing.T) {
	e := newEnv(t)
	e.setService(vip, tcp, revNatID, be1, be2)
	const flows = 200
	chosen := map[uint16]int{}
	for i := range uint16(flows) {
		f := withSport(toVIP, 30000+i)
		p, err := pkttest.Parse(e.mustRun(pkttest.TCPFrame(f, syn, nil), actOK))
		if err != nil {
			t.Fatal(err)
		}
		var b backend
		switch p.Dst() {
		case be1.addr:
			b = be1
		case be2.addr:
			b = be2
		default:
			t.Fatalf("flow %v sent to %v, not a backend", f, p.Dst())
		}
		chosen[uint16(b.id)]++
		if got := e.ctEntry(ctKey(f, tcp, ctmap.Forward)).BackendID; got != b.id {
			t.Fatalf("flow %v went to backend %d but ct says %d", f, b.id, got)
		}
		// A retransmitted SYN follows the first one.
		p2, _ := pkttest.Parse(e.mustRun(pkttest.TCPFrame(f, syn, nil), actOK))
		if p2.Dst() != p.Dst() {
			t.Fatalf("flow %v: SYN retransmit went to %v, first SYN to %v", f, p2.Dst(), p.Dst())
		}
	}
	// Binomial(200, 1/2): fewer than 50 on one side has probability < 1e-12.
	if chosen[1] < 50 || chosen[2] < 50 {
		t.Errorf("backend 1 got %d flows, backend 2 got %d, of %d", chosen[1], chosen[2], flows)
	}
	e.wantMetrics(map[int]uint64{metricForwardNew: flows, metricForwardCT: flows})
}

func TestEstablishedFlowKeepsItsBackend(t *testing.T) {
	e := newEnv(t)
	e.setService(vip, tcp, revNatID, be1)
	e.mustRun(pkttest.TCPFrame(toVIP, syn, nil), actOK)

	// The service moves to another backend: the flow stays.
	e.setService(vip, tcp, revNatID, be2)
	out := e.mustRun(pkttest.TCPFrame(toVIP, ack, []byte("data")), actOK)
	wantFrame(t, out, pkttest.TCPFrame(to(be1.addr), ack, []byte("data")))

	// The old backend disappears from the maps altogether: still.
	if err := e.backends.Delete([]uint32{be1.id}); err != nil {
		t.Fatal(err)
	}
	out = e.mustRun(pkttest.TCPFrame(toVIP, ack, nil), actOK)
	wantFrame(t, out, pkttest.TCPFrame(to(be1.addr), ack, nil))
	out = e.mustRun(pkttest.TCPFrame(from(be1.addr), ack, nil), actOK)
	wantFrame(t, out, pkttest.TCPFrame(from(vip), ack, nil))

	// A new connection gets the new backend.
	f := withSport(toVIP, 40001)
	out = e.mustRun(pkttest.TCPFrame(f, syn, nil), actOK)
	wantFrame(t, out, pkttest.TCPFrame(pkttest.Flow{Src: f.Src, Dst: be2.addr}, syn, nil))

	e.wantMetrics(map[int]uint64{metricForwardNew: 2, metricForwardCT: 2, metricReplyRevNat: 1})
}

func TestReplyIsReverseNATed(t *testing.T) {
	e := newEnv(t)
	e.setService(vip, tcp, revNatID, be1)
	e.mustRun(pkttest.TCPFrame(toVIP, syn, nil), actOK)

	in := pkttest.TCPFrame(from(be1.addr), syn|ack, nil)
	out := e.mustRun(in, actOK)
	wantFrame(t, out, pkttest.TCPFrame(from(vip), syn|ack, nil))

	rep := e.ctEntry(ctKey(from(be1.addr), tcp, ctmap.Reply))
	if rep.Flags&ctmap.SeenReply == 0 || rep.Packets != 1 || rep.Bytes != uint64(len(in)) {
		t.Errorf("REPLY entry after a reply: %+v", rep)
	}
	e.wantMetrics(map[int]uint64{metricForwardNew: 1, metricReplyRevNat: 1})
}

// When the service is deleted its rev_nat entry goes, but a flow that was
// open keeps working both ways until its entries age out, as conntrack's
// NAT keeps it for kube-proxy: its FORWARD entry still sends to the backend
// (TestEstablishedFlowKeepsItsBackend), and its replies still get the
// frontend the REPLY entry recorded as source.
func TestReplyOutlivesItsRevNat(t *testing.T) {
	e := newEnv(t)
	e.setService(vip, tcp, revNatID, be1)
	e.mustRun(pkttest.TCPFrame(toVIP, syn, nil), actOK)
	if err := e.revNat.Delete([]uint32{revNatID}); err != nil {
		t.Fatal(err)
	}
	in := pkttest.TCPFrame(from(be1.addr), syn|ack, nil)
	wantFrame(t, e.mustRun(in, actOK), pkttest.TCPFrame(from(vip), syn|ack, nil))
	if rep := e.ctEntry(ctKey(from(be1.addr), tcp, ctmap.Reply)); rep.Packets != 1 || rep.Flags&ctmap.SeenReply == 0 {
		t.Errorf("REPLY entry not refreshed by its reply: %+v", rep)
	}
	e.wantMetrics(map[int]uint64{metricForwardNew: 1, metricReplyRevNat: 1})
}

func TestUDPIsDNATedAndReverseNATed(t *testing.T) {
	e := newEnv(t)
	e.setService(vip, udp, revNatID, be1)
	for _, payload := range []string{"q", "query"} {
		out := e.mustRun(pkttest.UDPFrame(toVIP, []byte(payload)), actOK)
		wantFrame(t, out, pkttest.UDPFrame(to(be1.addr), []byte(payload)))
		out = e.mustRun(pkttest.UDPFrame(from(be1.addr), []byte(payload)), actOK)
		wantFrame(t, out, pkttest.UDPFrame(from(vip), []byte(payload)))
	}
	e.wantMetrics(map[int]uint64{metricForwardNew: 1, metricForwardCT: 1, metricReplyRevNat: 2})
}

// A UDP checksum of 0 means "none" and must stay 0 through both rewrites.
func TestUDPWithoutChecksumStaysWithout(t *testing.T) {
	e := newEnv(t)
	e.setService(vip, udp, revNatID, be1)
	out := e.mustRun(pkttest.UDPFrameNoChecksum(toVIP, []byte("query")), actOK)
	wantFrame(t, out, pkttest.UDPFrameNoChecksum(to(be1.addr), []byte("query")))
	out = e.mustRun(pkttest.UDPFrameNoChecksum(from(be1.addr), []byte("answer")), actOK)
	wantFrame(t, out, pkttest.UDPFrameNoChecksum(from(vip), []byte("answer")))
}

// A UDP checksum that comes out as 0 after the rewrite must be sent as
// 0xffff, or the receiver reads "no checksum".
func TestUDPChecksumThatBecomesZeroIsSentAsFFFF(t *testing.T) {
	e := newEnv(t)
	e.setService(vip, udp, revNatID, be1)
	// Find the payload whose checksum towards the backend is 0.
	var payload []byte
	for v := range 1 << 16 {
		p := binary.BigEndian.AppendUint16(nil, uint16(v))
		dg := pkttest.UDP{SrcPort: client.Port(), DstPort: be1.addr.Port(), NoChecksum: true}.Marshal(client.Addr(), be1.addr.Addr(), p)
		binary.BigEndian.PutUint16(dg[6:8], 0)
		if pkttest.Checksum(pseudo(client, be1.addr, udp, len(dg)), dg) == 0 {
			payload = p
			break
		}
	}
	if payload == nil {
		t.Fatal("no payload gives checksum 0")
	}
	want := pkttest.UDPFrame(to(be1.addr), payload)
	if c := binary.BigEndian.Uint16(want[pkttest.EthLen+pkttest.IPv4Len+6:]); c != 0xffff {
		t.Fatalf("test setup: expected checksum 0xffff, built %#04x", c)
	}
	wantFrame(t, e.mustRun(pkttest.UDPFrame(toVIP, payload), actOK), want)
}

func pseudo(src, dst netip.AddrPort, proto uint8, n int) []byte {
	b := make([]byte, 12)
	s, d := src.Addr().As4(), dst.Addr().As4()
	copy(b[0:4], s[:])
	copy(b[4:8], d[:])
	b[9] = proto
	binary.BigEndian.PutUint16(b[10:12], uint16(n))
	return b
}

// SCTP's CRC32c covers no addresses but does cover the ports: a port change
// is folded into it incrementally, for any packet length (test runs take
// at most a page).
func TestSCTPKeepsCRC32cValid(t *testing.T) {
	e := newEnv(t)
	samePort := backend{id: 3, addr: addrPort("10.0.1.7:80")}
	vip2 := addrPort("10.96.0.11:80")
	e.setService(vip, sctp, revNatID, be1)
	e.setService(vip2, sctp, revNatID+1, samePort)

	for i, n := range []int{0, 4, 16, 100, 1000, 1452, 3500} {
		chunks := make([]byte, n)
		for j := range chunks {
			chunks[j] = byte(j*7 + i)
		}
		f := withSport(toVIP, uint16(50000+i))
		out := e.mustRun(pkttest.SCTPFrame(f, chunks, false), actOK)
		wantFrame(t, out, pkttest.SCTPFrame(pkttest.Flow{Src: f.Src, Dst: be1.addr}, chunks, false))
		back := pkttest.Flow{Src: be1.addr, Dst: f.Src}
		out = e.mustRun(pkttest.SCTPFrame(back, chunks, false), actOK)
		wantFrame(t, out, pkttest.SCTPFrame(pkttest.Flow{Src: vip, Dst: f.Src}, chunks, false))

		f2 := pkttest.Flow{Src: f.Src, Dst: vip2}
		out = e.mustRun(pkttest.SCTPFrame(f2, chunks, false), actOK)
		wantFrame(t, out, pkttest.SCTPFrame(pkttest.Flow{Src: f.Src, Dst: samePort.addr}, chunks, false))
	}
}

// A CRC32c of 0 is left to offload (or is RFC 9653's zero checksum): keep it.
func TestSCTPZeroCRCStaysZero(t *testing.T) {
	e := newEnv(t)
	e.setService(vip, sctp, revNatID, be1)
	out := e.mustRun(pkttest.SCTPFrame(toVIP, make([]byte, 16), true), actOK)
	wantFrame(t, out, pkttest.SCTPFrame(to(be1.addr), make([]byte, 16), true))
}

// A bare SYN on a closed flow's tuple is a new connection: balanced again.
func TestSYNAfterCloseIsBalancedAgain(t *testing.T) {
	e := newEnv(t)
	e.setService(vip, tcp, revNatID, be1)
	e.mustRun(pkttest.TCPFrame(toVIP, syn, nil), actOK)
	e.setService(vip, tcp, revNatID, be2)

	// Not closed yet: a SYN (retransmit) keeps the backend.
	wantFrame(t, e.mustRun(pkttest.TCPFrame(toVIP, syn, nil), actOK), pkttest.TCPFrame(to(be1.addr), syn, nil))
	wantFrame(t, e.mustRun(pkttest.TCPFrame(toVIP, fin|ack, nil), actOK), pkttest.TCPFrame(to(be1.addr), fin|ack, nil))
	// Closed: the next SYN picks from the service as it is now.
	wantFrame(t, e.mustRun(pkttest.TCPFrame(toVIP, syn, nil), actOK), pkttest.TCPFrame(to(be2.addr), syn, nil))
	fwd := e.ctEntry(ctKey(toVIP, tcp, ctmap.Forward))
	if fwd.BackendID != be2.id || fwd.Flags != 0 || fwd.Packets != 1 {
		t.Errorf("FORWARD entry after reopen: %+v", fwd)
	}
	e.ctEntry(ctKey(from(be2.addr), tcp, ctmap.Reply))
	e.wantMetrics(map[int]uint64{metricForwardNew: 2, metricForwardCT: 2})
}

// A mid-stream packet without ct (entry evicted) is balanced, not dropped.
func TestNonSYNWithoutCTIsBalanced(t *testing.T) {
	e := newEnv(t)
	e.setService(vip, tcp, revNatID, be1)
	out := e.mustRun(pkttest.TCPFrame(toVIP, ack, []byte("mid-stream")), actOK)
	wantFrame(t, out, pkttest.TCPFrame(to(be1.addr), ack, []byte("mid-stream")))
	e.wantMetrics(map[int]uint64{metricForwardNew: 1})
}

func TestBackendGoneIsDropped(t *testing.T) {
	e := newEnv(t)
	e.setService(vip, tcp, revNatID, be1)
	if err := e.backends.Delete([]uint32{be1.id}); err != nil {
		t.Fatal(err)
	}
	e.mustRun(pkttest.TCPFrame(toVIP, syn, nil), actShot)

	// A slot that is missing altogether.
	vip2 := addrPort("10.96.0.11:80")
	key := lbmap.ServiceKey{Addr: lbmap.AddrFrom(vip2.Addr()), Port: vip2.Port(), Proto: tcp}
	if err := e.services.Update([]lbmap.ServiceKey{key}, []lbmap.ServiceValue{{Count: 1, RevNatID: revNatID}}); err != nil {
		t.Fatal(err)
	}
	e.mustRun(pkttest.TCPFrame(to(vip2), syn, nil), actShot)

	if n := e.ctLen(); n != 0 {
		t.Errorf("%d ct entries after drops, want 0", n)
	}
	e.wantMetrics(map[int]uint64{metricDropBackendGone: 2})
}

func TestNonServiceTrafficPassesUnchanged(t *testing.T) {
	e := newEnv(t)
	e.setService(vip, tcp, revNatID, be1)
	// A later fragment whose bytes look like a SYN to the service.
	frag := pkttest.IPv4{Src: client.Addr(), Dst: vip.Addr(), Proto: tcp, ID: 5, FragOff: 185}.Marshal(pkttest.TCPSegment(toVIP, syn, nil)[pkttest.IPv4Len:])
	frames := map[string][]byte{
		"tcp to another address": pkttest.TCPFrame(to(addrPort("10.0.9.9:80")), syn, nil),
		"tcp to another port":    pkttest.TCPFrame(withDport(toVIP, 81), syn, nil),
		"udp to a tcp service":   pkttest.UDPFrame(toVIP, []byte("x")),
		"icmp echo to the vip":   pkttest.ICMPFrame(client.Addr(), vip.Addr(), pkttest.ICMP{Type: pkttest.ICMPEchoRequest, Rest: 0x00010001}, []byte("ping")),
		"gre":                    pkttest.Ether(pkttest.NodeMAC, pkttest.PeerMAC, pkttest.EtherTypeIPv4, pkttest.IPv4{Src: client.Addr(), Dst: vip.Addr(), Proto: 47}.Marshal(make([]byte, 8))),
		"later fragment to vip":  pkttest.Ether(pkttest.NodeMAC, pkttest.PeerMAC, pkttest.EtherTypeIPv4, frag),
		"arp":                    pkttest.Ether(pkttest.NodeMAC, pkttest.PeerMAC, pkttest.EtherTypeARP, make([]byte, 28)),
		"ipv6":                   pkttest.Ether(pkttest.NodeMAC, pkttest.PeerMAC, pkttest.EtherTypeIPv6, make([]byte, 60)),
		"ethernet header only":   pkttest.Ether(pkttest.NodeMAC, pkttest.PeerMAC, pkttest.EtherTypeARP, nil),
	}
	for name, in := range frames {
		ret, out := e.run(in)
		if ret != actOK || string(out) != string(in) {
			t.Errorf("%s: verdict %d, frame changed %v\nin:  %x\nout: %x", name, ret, string(out) != string(in), in, out)
		}
	}
	if n := e.ctLen(); n != 0 {
		t.Errorf("%d ct entries, want 0", n)
	}
	e.wantMetrics(nil)
}
