package tclb_test

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/fastpath-net/fastpath/internal/datapath/pkttest"
)

const mtu = 1400 // next-hop MTU of the frag-needed errors

// A backend (or a router behind the DNAT) reports about a client -> backend
// packet; the client must get it about client -> VIP, or its socket never
// learns (PMTU, unreachable).
func TestICMPErrorAboutAFlowIsReverseNATed(t *testing.T) {
	e := newEnv(t)
	e.setService(vip, tcp, revNatID, be1)
	syn := pkttest.TCPFrame(toVIP, syn, []byte("payload beyond the quote"))
	dnated := e.mustRun(syn, actOK)

	for _, c := range []struct {
		name        string
		sender      netip.Addr // outer source
		wantOuterSr netip.Addr
	}{
		{"from the backend", be1.addr.Addr(), vip.Addr()},
		{"from a router", router, router},
	} {
		in := pkttest.ICMPErrorFrame(c.sender, client.Addr(), pkttest.ICMPDestUnreach, pkttest.ICMPCodeFragNeeded, mtu, ipOf(dnated))
		out := e.mustRun(in, actOK)
		// The same error about the packet the client sent.
		want := pkttest.ICMPErrorFrame(c.wantOuterSr, client.Addr(), pkttest.ICMPDestUnreach, pkttest.ICMPCodeFragNeeded, mtu, ipOf(syn))
		wantFrame(t, out, want)
	}
	e.wantMetrics(map[int]uint64{metricForwardNew: 1, metricICMPErrRevNat: 2})
}

// The frontend comes from the flow's REPLY entry, as for its replies
// (TestReplyOutlivesItsRevNat): an error about a flow whose Service was
// deleted is translated like the flow's packets still are.
func TestICMPErrorOutlivesItsRevNat(t *testing.T) {
	e := newEnv(t)
	e.setService(vip, tcp, revNatID, be1)
	syn := pkttest.TCPFrame(toVIP, syn, nil)
	dnated := e.mustRun(syn, actOK)
	if err := e.revNat.Delete([]uint32{revNatID}); err != nil {
		t.Fatal(err)
	}
	in := pkttest.ICMPErrorFrame(be1.addr.Addr(), client.Addr(), pkttest.ICMPDestUnreach, pkttest.ICMPCodeFragNeeded, mtu, ipOf(dnated))
	want := pkttest.ICMPErrorFrame(vip.Addr(), client.Addr(), pkttest.ICMPDestUnreach, pkttest.ICMPCodeFragNeeded, mtu, ipOf(syn))
	wantFrame(t, e.mustRun(in, actOK), want)
	e.wantMetrics(map[int]uint64{metricForwardNew: 1, metricICMPErrRevNat: 1})
}

// UDP quotes include the transport checksum, which stays as quoted.
func TestICMPErrorAboutAUDPFlowIsReverseNATed(t *testing.T) {
	e := newEnv(t)
	e.setService(vip, udp, revNatID, be1)
	dnated := e.mustRun(pkttest.UDPFrame(toVIP, []byte("query")), actOK)
	in := pkttest.ICMPErrorFrame(be1.addr.Addr(), client.Addr(), pkttest.ICMPDestUnreach, pkttest.ICMPCodePortUnr, 0, ipOf(dnated))
	p := parseChecked(t, e.mustRun(in, actOK))
	q := p.Quote
	if p.IP.Src != vip.Addr() || q.IP.Src != client.Addr() || q.IP.Dst != vip.Addr() ||
		q.SrcPort != client.Port() || q.DstPort != vip.Port() {
		t.Errorf("outer %v -> %v, quote %v:%d -> %v:%d", p.IP.Src, p.IP.Dst, q.IP.Src, q.SrcPort, q.IP.Dst, q.DstPort)
	}
	orig := pkttest.UDPDatagram(toVIP, []byte("query"), false)
	if !bytes.Equal(q.IP.Header, orig[:pkttest.IPv4Len]) {
		t.Errorf("quoted header %x, want the client's %x", q.IP.Header, orig[:pkttest.IPv4Len])
	}
	e.wantMetrics(map[int]uint64{metricForwardNew: 1, metricICMPErrRevNat: 1})
}

// parseChecked parses a frame the program sent, after checking its checksums.
func parseChecked(t *testing.T, frame []byte) pkttest.Packet {
	t.Helper()
	if err := pkttest.VerifyChecksums(frame); err != nil {
		t.Error(err)
	}
	p, err := pkttest.Parse(frame)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// The client reports about a reply it got from the VIP (say, frag needed on
// its side): the backend must get it about backend -> client.
func TestICMPErrorFromTheClientIsForwardedToTheBackend(t *testing.T) {
	e := newEnv(t)
	e.setService(vip, tcp, revNatID, be1)
	e.mustRun(pkttest.TCPFrame(toVIP, syn, nil), actOK)
	backendReply := pkttest.TCPFrame(from(be1.addr), syn|ack, []byte("a large reply"))
	seen := e.mustRun(backendReply, actOK)

	in := pkttest.ICMPErrorFrame(client.Addr(), vip.Addr(), pkttest.ICMPDestUnreach, pkttest.ICMPCodeFragNeeded, mtu, ipOf(seen))
	out := e.mustRun(in, actOK)
	wantFrame(t, out, pkttest.ICMPErrorFrame(client.Addr(), be1.addr.Addr(), pkttest.ICMPDestUnreach, pkttest.ICMPCodeFragNeeded, mtu, ipOf(backendReply)))
	e.wantMetrics(map[int]uint64{metricForwardNew: 1, metricReplyRevNat: 1, metricForwardCT: 1})
}

func TestICMPErrorsNotAboutBalancedFlowsPassUnchanged(t *testing.T) {
	e := newEnv(t)
	e.setService(vip, tcp, revNatID, be1)
	e.mustRun(pkttest.TCPFrame(toVIP, syn, nil), actOK)
	other := pkttest.TCPSegment(pkttest.Flow{Src: client, Dst: addrPort("10.0.1.5:9090")}, syn, nil)
	frames := map[string][]byte{
		"other port of the backend": pkttest.ICMPErrorFrame(be1.addr.Addr(), client.Addr(), pkttest.ICMPDestUnreach, pkttest.ICMPCodePortUnr, 0, other),
		"time exceeded, untracked":  pkttest.ICMPErrorFrame(router, client.Addr(), pkttest.ICMPTimeExceeded, 0, 0, other),
		"echo reply from backend":   pkttest.ICMPFrame(be1.addr.Addr(), client.Addr(), pkttest.ICMP{Type: pkttest.ICMPEchoReply}, nil),
	}
	for name, in := range frames {
		ret, out := e.run(in)
		if ret != actOK || !bytes.Equal(out, in) {
			t.Errorf("%s: verdict %d, changed %v", name, ret, !bytes.Equal(out, in))
		}
	}
	e.wantMetrics(map[int]uint64{metricForwardNew: 1})
}
