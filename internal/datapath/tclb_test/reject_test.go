package tclb_test

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/fastpath-net/fastpath/internal/datapath/pkttest"
)

// quoteLen is how much of the transport header a reject quotes: the fixed
// part (see bpf/include/reject.h for why not just 8 bytes).
var quoteLen = map[uint8]int{tcp: pkttest.TCPLen, udp: pkttest.UDPLen, sctp: pkttest.SCTPLen}

// wantPortUnreachable checks that out is the ICMP port unreachable a
// kernel would send for in: from the VIP to the client, MACs swapped,
// quoting in's IPv4 header and transport header, every checksum valid.
func wantPortUnreachable(t *testing.T, out, in []byte) {
	t.Helper()
	if err := pkttest.VerifyChecksums(out); err != nil {
		t.Errorf("checksums: %v\nframe: %x", err, out)
	}
	p, err := pkttest.Parse(out)
	if err != nil {
		t.Fatalf("reject is not a well-formed frame: %v\n%x", err, out)
	}
	orig, _ := pkttest.Parse(in)
	if p.DstMAC != orig.SrcMAC || p.SrcMAC != orig.DstMAC {
		t.Errorf("MACs %x -> %x, want %x -> %x", p.SrcMAC, p.DstMAC, orig.DstMAC, orig.SrcMAC)
	}
	if p.IP.Src != orig.IP.Dst || p.IP.Dst != orig.IP.Src || p.IP.Proto != pkttest.ProtoICMP || p.IP.TTL != 64 || p.IP.TOS != 0xc0 {
		t.Errorf("IPv4 header %+v", p.IP)
	}
	if p.ICMPType != pkttest.ICMPDestUnreach || p.ICMPCode != pkttest.ICMPCodePortUnr || p.ICMPRest != 0 {
		t.Errorf("ICMP type %d code %d rest %#x, want port unreachable", p.ICMPType, p.ICMPCode, p.ICMPRest)
	}
	quote := pkttest.QuoteN(ipOf(in), quoteLen[orig.IP.Proto])
	if !bytes.Equal(p.Payload[pkttest.ICMPLen:], quote) {
		t.Errorf("quote %x, want %x", p.Payload[pkttest.ICMPLen:], quote)
	}
	// Built independently, the whole frame must come out the same.
	ip := pkttest.IPv4{Src: orig.IP.Dst, Dst: orig.IP.Src, Proto: pkttest.ProtoICMP, TOS: 0xc0}
	want := pkttest.Ether(orig.SrcMAC, orig.DstMAC, pkttest.EtherTypeIPv4,
		ip.Marshal(pkttest.ICMP{Type: pkttest.ICMPDestUnreach, Code: pkttest.ICMPCodePortUnr}.Marshal(quote)))
	if !bytes.Equal(out, want) {
		t.Errorf("reject differs\ngot:  %x\nwant: %x", out, want)
	}
}

func TestNoBackendTCPSYNGetsPortUnreachable(t *testing.T) {
	e := newEnv(t)
	e.setService(vip, tcp, revNatID)
	mss := []byte{2, 4, 0x05, 0xb4} // the quote must stop 8 bytes into TCP
	seg := pkttest.TCP{SrcPort: client.Port(), DstPort: vip.Port(), Seq: 77, Flags: syn, Options: mss}.Marshal(client.Addr(), vip.Addr(), nil)
	in := pkttest.Ether(pkttest.NodeMAC, pkttest.PeerMAC, pkttest.EtherTypeIPv4,
		pkttest.IPv4{Src: client.Addr(), Dst: vip.Addr(), Proto: tcp, ID: 3, DF: true}.Marshal(seg))

	out := e.mustRun(in, actRedirect)
	wantPortUnreachable(t, out, in)
	if n := e.ctLen(); n != 0 {
		t.Errorf("%d ct entries after a reject, want 0", n)
	}
	e.wantMetrics(map[int]uint64{metricDropNoBackend: 1})
}

func TestNoBackendUDPWithIPOptionsQuotesTheOptions(t *testing.T) {
	e := newEnv(t)
	e.setService(vip, udp, revNatID)
	dg := pkttest.UDP{SrcPort: client.Port(), DstPort: vip.Port()}.Marshal(client.Addr(), vip.Addr(), []byte("a longer datagram payload"))
	ip := pkttest.IPv4{Src: client.Addr(), Dst: vip.Addr(), Proto: udp, ID: 4, TOS: 0x10,
		Options: []byte{0x94, 0x04, 0, 0, 0x01, 0x01, 0x01, 0x00}} // router alert, NOPs
	in := pkttest.Ether(pkttest.NodeMAC, pkttest.PeerMAC, pkttest.EtherTypeIPv4, ip.Marshal(dg))

	out := e.mustRun(in, actRedirect)
	// The error has precedence "internetwork control" and the TOS bits of
	// the original.
	p, _ := pkttest.Parse(out)
	if p.IP.TOS != 0xc0|0x10 {
		t.Errorf("TOS %#x, want %#x", p.IP.TOS, 0xc0|0x10)
	}
	if err := pkttest.VerifyChecksums(out); err != nil {
		t.Error(err)
	}
	if q := pkttest.Quote(ipOf(in)); !bytes.Equal(p.Payload[pkttest.ICMPLen:], q) || len(q) != 28+8 {
		t.Errorf("quote %x, want %x", p.Payload[pkttest.ICMPLen:], q)
	}
	e.wantMetrics(map[int]uint64{metricDropNoBackend: 1})
}

func TestNoBackendSCTPGetsPortUnreachable(t *testing.T) {
	e := newEnv(t)
	e.setService(vip, sctp, revNatID)
	in := pkttest.SCTPFrame(toVIP, make([]byte, 20), false)
	wantPortUnreachable(t, e.mustRun(in, actRedirect), in)
	e.wantMetrics(map[int]uint64{metricDropNoBackend: 1})
}

// RFC 1122: no ICMP error for link-layer broadcasts or multicasts, or for
// sources that are not one host. The packet is dropped and counted.
func TestNoBackendWithoutErrorForBroadcastsAndOddSources(t *testing.T) {
	e := newEnv(t)
	e.setService(vip, udp, revNatID)
	bcast := pkttest.Ether(pkttest.MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, pkttest.PeerMAC, pkttest.EtherTypeIPv4,
		pkttest.UDPDatagram(toVIP, []byte("x"), false))
	mcast := pkttest.Ether(pkttest.MAC{0x01, 0x00, 0x5e, 0, 0, 1}, pkttest.PeerMAC, pkttest.EtherTypeIPv4,
		pkttest.UDPDatagram(toVIP, []byte("x"), false))
	frames := map[string][]byte{
		"broadcast mac":    bcast,
		"multicast mac":    mcast,
		"source 0.0.0.0":   pkttest.UDPFrame(pkttest.Flow{Src: addrPort("0.0.0.0:68"), Dst: vip}, []byte("x")),
		"multicast source": pkttest.UDPFrame(pkttest.Flow{Src: addrPort("224.0.0.9:520"), Dst: vip}, []byte("x")),
		"broadcast source": pkttest.UDPFrame(pkttest.Flow{Src: addrPort("255.255.255.255:9"), Dst: vip}, []byte("x")),
	}
	for name, in := range frames {
		if ret, out := e.run(in); ret != actShot {
			t.Errorf("%s: verdict %d, want drop\nout: %x", name, ret, out)
		}
	}
	e.wantMetrics(map[int]uint64{metricDropNoBackend: uint64(len(frames))})
}

// Services are TCP/UDP/SCTP, so ICMP to a VIP never meets the reject, not
// even an ICMP error; RFC 1122 forbids errors about errors anyway.
func TestNoBackendICMPToVIPGetsNoError(t *testing.T) {
	e := newEnv(t)
	e.setService(vip, tcp, revNatID)
	e.setService(netip.AddrPortFrom(vip.Addr(), 0), pkttest.ProtoICMP, revNatID+1)
	frames := map[string][]byte{
		"echo": pkttest.ICMPFrame(client.Addr(), vip.Addr(), pkttest.ICMP{Type: pkttest.ICMPEchoRequest, Rest: 0x00010001}, []byte("ping")),
		"error about an untracked flow": pkttest.ICMPErrorFrame(client.Addr(), vip.Addr(), pkttest.ICMPDestUnreach, pkttest.ICMPCodePortUnr, 0,
			pkttest.TCPSegment(from(vip), syn|ack, nil)),
	}
	for name, in := range frames {
		ret, out := e.run(in)
		if ret != actOK || !bytes.Equal(out, in) {
			t.Errorf("%s: verdict %d, changed %v\nout: %x", name, ret, !bytes.Equal(out, in), out)
		}
	}
	e.wantMetrics(nil)
}
