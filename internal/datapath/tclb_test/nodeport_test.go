package tclb_test

import (
	"net/netip"
	"testing"

	"github.com/fastpath-net/fastpath/internal/datapath/ctmap"
	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
	"github.com/fastpath-net/fastpath/internal/datapath/pkttest"
)

// A NodePort frontend is one of the node's own addresses (here masqIP, an
// address of the FIB namespace). Its replies get that address as source,
// which the stack drops as a martian: they must leave by the FIB's
// interface, TTL down by one, like masqueraded requests. Both the
// masqueraded (externalTrafficPolicy Cluster) and the source-keeping
// (Local) flow are covered; their ct entries carry the NodePort flag. A
// ClusterIP flow's reply still goes to the stack.
func TestNodePortRepliesAreRedirected(t *testing.T) {
	e, mac := masqEnv(t, roleExternal, portMin, portMax)
	np := netip.AddrPortFrom(masqIP, 30080)
	npLocal := netip.AddrPortFrom(masqIP, 30081)
	e.setServiceValue(np, tcp, lbmap.ServiceValue{RevNatID: revNatID, Flags: lbmap.ServiceNodePort}, be1)
	e.setServiceValue(npLocal, tcp, lbmap.ServiceValue{RevNatID: revNatID + 1, Flags: lbmap.ServiceNodePort | lbmap.ServiceExtLocal}, be1)
	e.setServiceValue(vip, tcp, lbmap.ServiceValue{RevNatID: revNatID + 2, Flags: lbmap.ServiceExtLocal}, be1)

	// Cluster: masqueraded there, and the reply redirected back.
	out := e.mustRun(pkttest.TCPFrame(to(np), syn, nil), actRedirect)
	port := sent(t, out, portMin, portMax)
	toBackend := pkttest.Flow{Src: masq(port), Dst: be1.addr}
	if f := e.ctEntry(ctKey(to(np), tcp, ctmap.Forward)); f.Flags != ctmap.SNAT|ctmap.NodePort {
		t.Errorf("FORWARD entry flags %#x, want SNAT|NodePort", f.Flags)
	}
	if r := e.ctEntry(ctKey(toBackend.Reverse(), tcp, ctmap.Reply)); r.Flags != ctmap.SNAT|ctmap.NodePort {
		t.Errorf("REPLY entry flags %#x, want SNAT|NodePort", r.Flags)
	}
	out = e.mustRun(pkttest.TCPFrame(toBackend.Reverse(), syn|ack, nil), actRedirect)
	wantFrame(t, out, pkttest.Forwarded(pkttest.TCPFrame(from(np), syn|ack, nil), neighMAC, mac))

	// Local: only DNATed, the reply redirected all the same.
	wantFrame(t, e.mustRun(pkttest.TCPFrame(to(npLocal), syn, nil), actOK), pkttest.TCPFrame(to(be1.addr), syn, nil))
	if r := e.ctEntry(ctKey(from(be1.addr), tcp, ctmap.Reply)); r.Flags != ctmap.NodePort {
		t.Errorf("REPLY entry flags %#x, want NodePort", r.Flags)
	}
	out = e.mustRun(pkttest.TCPFrame(from(be1.addr), syn|ack, nil), actRedirect)
	wantFrame(t, out, pkttest.Forwarded(pkttest.TCPFrame(from(npLocal), syn|ack, nil), neighMAC, mac))

	// Not a NodePort: the reply goes to the stack, as ever.
	other := withSport(toVIP, 40100)
	e.mustRun(pkttest.TCPFrame(other, syn, nil), actOK)
	wantFrame(t, e.mustRun(pkttest.TCPFrame(pkttest.Flow{Src: be1.addr, Dst: other.Src}, syn|ack, nil), actOK),
		pkttest.TCPFrame(other.Reverse(), syn|ack, nil))
	e.wantMetrics(map[int]uint64{metricForwardNew: 3, metricReplyRevNat: 3})
}

// A backend's ICMP error about a NodePort flow gets the NodePort address as
// its source too, and leaves the same way; one from a router in between
// keeps its source and goes to the stack. (The quoted UDP checksum stays as
// the backend quoted it, so frames are compared field by field.)
func TestNodePortICMPErrorFromBackendIsRedirected(t *testing.T) {
	e, mac := masqEnv(t, roleExternal, portMin, portMax)
	np := netip.AddrPortFrom(masqIP, 30053)
	e.setServiceValue(np, udp, lbmap.ServiceValue{RevNatID: revNatID, Flags: lbmap.ServiceNodePort | lbmap.ServiceExtLocal}, be1)
	dnated := e.mustRun(pkttest.UDPFrame(to(np), []byte("query")), actOK)

	check := func(out []byte, src netip.Addr, ttl uint8, macs *[2]pkttest.MAC) {
		t.Helper()
		p := parseChecked(t, out)
		q := p.Quote
		if p.IP.Src != src || p.IP.Dst != client.Addr() || p.IP.TTL != ttl || q == nil ||
			q.IP.Src != client.Addr() || q.SrcPort != client.Port() || q.IP.Dst != np.Addr() || q.DstPort != np.Port() {
			t.Errorf("outer %v -> %v ttl %d, quote %+v", p.IP.Src, p.IP.Dst, p.IP.TTL, q)
		}
		if macs != nil && (p.DstMAC != macs[0] || p.SrcMAC != macs[1]) {
			t.Errorf("MACs %v <- %v, want %v <- %v", p.DstMAC, p.SrcMAC, macs[0], macs[1])
		}
	}
	in := pkttest.ICMPErrorFrame(be1.addr.Addr(), client.Addr(), pkttest.ICMPDestUnreach, pkttest.ICMPCodePortUnr, 0, ipOf(dnated))
	check(e.mustRun(in, actRedirect), masqIP, 63, &[2]pkttest.MAC{neighMAC, mac})
	in = pkttest.ICMPErrorFrame(router, client.Addr(), pkttest.ICMPDestUnreach, pkttest.ICMPCodePortUnr, 0, ipOf(dnated))
	check(e.mustRun(in, actOK), router, 64, nil)
	e.wantMetrics(map[int]uint64{metricForwardNew: 1, metricICMPErrRevNat: 2})
}
