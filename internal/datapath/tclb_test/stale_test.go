package tclb_test

import (
	"testing"

	"github.com/fastpath-net/fastpath/internal/datapath/ctmap"
	"github.com/fastpath-net/fastpath/internal/datapath/pkttest"
)

// The benchmark author's reproduction: after client:40000 -> vip -> be1
// closed, the client connects to be1 directly from the same port. be1's
// SYN-ACK matches the closed flow's REPLY entry (alive: the backend's
// TIME_WAIT), but belongs to the new connection: it must reach the client
// from be1, not from the VIP, and the stale pair is deleted. Until then,
// the closed flow's own late packets are still translated.
func TestSYNACKOnAClosedFlowIsNotReverseNATed(t *testing.T) {
	e := newEnv(t)
	e.setService(vip, tcp, revNatID, be1)
	closeTCP(t, e, vip, be1.addr, client)
	wantFrame(t, e.mustRun(pkttest.TCPFrame(from(be1.addr), fin|ack, nil), actOK), pkttest.TCPFrame(from(vip), fin|ack, nil))

	direct := to(be1.addr)
	for _, f := range []struct {
		flow  pkttest.Flow
		flags uint8
		ct    int // entries after it
	}{{direct, syn, 2}, {direct.Reverse(), syn | ack, 0}, {direct, ack, 0}, {direct.Reverse(), ack, 0}} {
		in := pkttest.TCPFrame(f.flow, f.flags, []byte("direct"))
		wantFrame(t, e.mustRun(in, actOK), in)
		if n := e.ctLen(); n != f.ct {
			t.Fatalf("%d ct entries after %v %#x, want %d", n, f.flow, f.flags, f.ct)
		}
	}
	// closeTCP's 6 packets, the retransmitted FIN; nothing of the direct
	// connection.
	e.wantMetrics(map[int]uint64{metricForwardNew: 1, metricForwardCT: 2, metricReplyRevNat: 4})
}

// SYN-ACKs that are stale although their REPLY entry is alive and not
// closing: its FORWARD entry is gone, or names another backend since the
// tuple was balanced again. Only the stale REPLY entry goes; a FORWARD
// entry that is not its own stays.
func TestSYNACKWithoutItsForwardEntryIsNotReverseNATed(t *testing.T) {
	e := newEnv(t)
	e.setService(vip, tcp, revNatID, be1)
	e.mustRun(pkttest.TCPFrame(toVIP, syn, nil), actOK)
	if err := e.ct.Delete([]ctmap.Key{ctKey(toVIP, tcp, ctmap.Forward)}); err != nil {
		t.Fatal(err)
	}
	in := pkttest.TCPFrame(from(be1.addr), syn|ack, nil)
	wantFrame(t, e.mustRun(in, actOK), in)
	if n := e.ctLen(); n != 0 {
		t.Errorf("%d ct entries, want 0", n)
	}

	// The tuple expired and was balanced again, to be2.
	e.mustRun(pkttest.TCPFrame(toVIP, syn, nil), actOK)
	expire(t, e, ctKey(toVIP, tcp, ctmap.Forward))
	e.setService(vip, tcp, revNatID, be2)
	wantFrame(t, e.mustRun(pkttest.TCPFrame(toVIP, syn, nil), actOK), pkttest.TCPFrame(to(be2.addr), syn, nil))
	wantFrame(t, e.mustRun(in, actOK), in)
	if _, ok, _ := e.ct.Lookup(ctKey(from(be1.addr), tcp, ctmap.Reply)); ok {
		t.Error("be1's left-over REPLY entry survived its SYN-ACK")
	}
	if fwd := e.ctEntry(ctKey(toVIP, tcp, ctmap.Forward)); fwd.BackendID != be2.id {
		t.Errorf("FORWARD entry %+v, want the flow to be2", fwd)
	}
	wantFrame(t, e.mustRun(pkttest.TCPFrame(from(be2.addr), syn|ack, nil), actOK), pkttest.TCPFrame(from(vip), syn|ack, nil))
}

// An expired REPLY entry translates while its flow is open (the backend's
// direction was quiet; the client's was not), and is stale, deleted with
// its FORWARD entry, once that expired too.
func TestExpiredReplyEntryTranslatesOnlyWhileItsFlowIsOpen(t *testing.T) {
	e := newEnv(t)
	e.setService(vip, udp, revNatID, be1)
	fwd, rep := ctKey(toVIP, udp, ctmap.Forward), ctKey(from(be1.addr), udp, ctmap.Reply)
	e.mustRun(pkttest.UDPFrame(toVIP, []byte("q")), actOK)
	expire(t, e, rep)
	wantFrame(t, e.mustRun(pkttest.UDPFrame(from(be1.addr), []byte("a")), actOK), pkttest.UDPFrame(from(vip), []byte("a")))
	if got := e.ctEntry(rep); got.Expires < bootNow(t) {
		t.Errorf("REPLY entry not refreshed by its reply: %+v", got)
	}

	expire(t, e, fwd, rep)
	in := pkttest.UDPFrame(from(be1.addr), []byte("a"))
	wantFrame(t, e.mustRun(in, actOK), in)
	if n := e.ctLen(); n != 0 {
		t.Errorf("%d ct entries, want 0", n)
	}
	e.wantMetrics(map[int]uint64{metricForwardNew: 1, metricReplyRevNat: 1})
}

// A backend that reset the connection (REPLY entry closing) while the
// client did not close: a SYN the client sends again from the same port to
// the same frontend follows the flow, and the SYN-ACK is the flow's own.
func TestSYNACKAfterABackendResetIsReverseNATed(t *testing.T) {
	e := newEnv(t)
	e.setService(vip, tcp, revNatID, be1)
	e.mustRun(pkttest.TCPFrame(toVIP, syn, nil), actOK)
	e.mustRun(pkttest.TCPFrame(from(be1.addr), syn|ack, nil), actOK)
	e.mustRun(pkttest.TCPFrame(toVIP, ack, nil), actOK)
	e.mustRun(pkttest.TCPFrame(from(be1.addr), rst, nil), actOK)
	wantFrame(t, e.mustRun(pkttest.TCPFrame(toVIP, syn, nil), actOK), pkttest.TCPFrame(to(be1.addr), syn, nil))
	wantFrame(t, e.mustRun(pkttest.TCPFrame(from(be1.addr), syn|ack, nil), actOK), pkttest.TCPFrame(from(vip), syn|ack, nil))
	if n := e.ctLen(); n != 2 {
		t.Errorf("%d ct entries, want 2", n)
	}
}

// A SYN sent again heals its flow's missing REPLY entry. The agent's GC
// can delete a new flow's REPLY entry when the flow reuses a tuple in the
// instant between GC's last look at the closed flow's entry and its delete
// (ctmap.GC): the backend's SYN-ACK then passes without reverse NAT and is
// lost, and the SYNs the client sends again must not follow the FORWARD
// entry into the same half-flow. The entry comes back as the flow's own.
func TestSYNSentAgainHealsAMissingReplyEntry(t *testing.T) {
	e := newEnv(t)
	e.setService(vip, tcp, revNatID, be1)
	rep := ctKey(from(be1.addr), tcp, ctmap.Reply)
	wantFrame(t, e.mustRun(pkttest.TCPFrame(toVIP, syn, nil), actOK), pkttest.TCPFrame(to(be1.addr), syn, nil))
	want := e.ctEntry(rep)
	if err := e.ct.Delete([]ctmap.Key{rep}); err != nil {
		t.Fatal(err)
	}
	synAck := pkttest.TCPFrame(from(be1.addr), syn|ack, nil)
	wantFrame(t, e.mustRun(synAck, actOK), synAck)

	wantFrame(t, e.mustRun(pkttest.TCPFrame(toVIP, syn, nil), actOK), pkttest.TCPFrame(to(be1.addr), syn, nil))
	got := e.ctEntry(rep)
	if got.Expires < want.Expires {
		t.Errorf("healed REPLY entry expires at %d, before the first one (%d)", got.Expires, want.Expires)
	}
	got.Expires = want.Expires
	if got != want {
		t.Errorf("healed REPLY entry %+v, want %+v as the flow's first SYN wrote it", got, want)
	}
	wantFrame(t, e.mustRun(synAck, actOK), pkttest.TCPFrame(from(vip), syn|ack, nil))

	// A REPLY entry that is there is left as it is: the SYN-ACK counted.
	wantFrame(t, e.mustRun(pkttest.TCPFrame(toVIP, syn, nil), actOK), pkttest.TCPFrame(to(be1.addr), syn, nil))
	if n := e.ctEntry(rep).Packets; n != 1 {
		t.Errorf("REPLY entry counts %d packets after a SYN sent again, want the SYN-ACK's 1", n)
	}
}

// The REPLY entry of a masqueraded flow holds its port: a SYN sent again
// writes it back with the flow's port and client.
func TestSYNSentAgainHealsAMasqueradedFlowsReplyEntry(t *testing.T) {
	e, mac := masqEnv(t, roleInternal, portMin, portMax)
	e.setService(vip, tcp, revNatID, podBackend)
	self := pkttest.Flow{Src: pod, Dst: vip}
	port := sent(t, e.mustRun(pkttest.TCPFrame(self, syn, nil), actRedirect), portMin, portMax)
	toBackend := pkttest.Flow{Src: masq(port), Dst: podBackend.addr}
	rep := ctKey(toBackend.Reverse(), tcp, ctmap.Reply)
	want := e.ctEntry(rep)
	if err := e.ct.Delete([]ctmap.Key{rep}); err != nil {
		t.Fatal(err)
	}
	out := e.mustRun(pkttest.TCPFrame(self, syn, nil), actRedirect)
	wantFrame(t, out, pkttest.Forwarded(pkttest.TCPFrame(toBackend, syn, nil), neighMAC, mac))
	got := e.ctEntry(rep)
	got.Expires = want.Expires
	if got != want {
		t.Errorf("healed REPLY entry %+v, want %+v", got, want)
	}
	wantFrame(t, e.mustRun(pkttest.TCPFrame(toBackend.Reverse(), syn|ack, nil), actOK), pkttest.TCPFrame(self.Reverse(), syn|ack, nil))
}
