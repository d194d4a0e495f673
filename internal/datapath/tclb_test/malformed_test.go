package tclb_test

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/fastpath-net/fastpath/internal/datapath/pkttest"
)

// eth wraps an IPv4 packet as the builders do.
func eth(ip []byte) []byte {
	return pkttest.Ether(pkttest.NodeMAC, pkttest.PeerMAC, pkttest.EtherTypeIPv4, ip)
}

// mangle returns a copy of the IPv4 packet in frame with f applied.
func mangle(frame []byte, f func(ip []byte)) []byte {
	out := append([]byte(nil), frame...)
	f(out[pkttest.EthLen:])
	return out
}

// The kernel's test run refuses frames of EtherType IPv4 shorter than an
// IPv4 header (EINVAL), so cuts start there; the parser's own check for
// them is only exercised by real traffic.
const minRunnable = pkttest.EthLen + pkttest.IPv4Len

// IPv4 that no receiver accepts is dropped as malformed; anything the LB
// does not understand otherwise passes untouched.
func TestMalformedPackets(t *testing.T) {
	e := newEnv(t)
	e.setService(vip, tcp, revNatID, be1)
	e.setService(vip, udp, revNatID, be1)
	e.setService(vip, sctp, revNatID, be1)
	s := pkttest.TCPFrame(toVIP, syn, nil)
	sctpFrame := pkttest.SCTPFrame(toVIP, make([]byte, 16), false)

	drop := map[string][]byte{
		"ihl 4":                mangle(s, func(ip []byte) { ip[0] = 0x44 }),
		"version 6":            mangle(s, func(ip []byte) { ip[0] = 0x65 }),
		"options past the end": mangle(s, func(ip []byte) { ip[0] = 0x4f }),
		"tcp header cut":       s[:len(s)-1],
		"tcp doff 4":           mangle(s, func(ip []byte) { ip[pkttest.IPv4Len+12] = 0x40 }),
		"udp header cut":       pkttest.UDPFrame(toVIP, nil)[:pkttest.EthLen+pkttest.IPv4Len+6],
		"sctp header cut":      sctpFrame[:pkttest.EthLen+pkttest.IPv4Len+10],
		"sctp tot_len short": mangle(sctpFrame, func(ip []byte) {
			binary.BigEndian.PutUint16(ip[2:4], pkttest.IPv4Len+8)
		}),
		"sctp tot_len past the end": mangle(sctpFrame, func(ip []byte) {
			binary.BigEndian.PutUint16(ip[2:4], uint16(len(ip)+4))
		}),
	}
	for name, in := range drop {
		if ret, out := e.run(in); ret != actShot {
			t.Errorf("%s: verdict %d, want drop\nin:  %x\nout: %x", name, ret, in, out)
		}
	}

	errFrame := pkttest.ICMPErrorFrame(router, client.Addr(), pkttest.ICMPDestUnreach, 1, 0, ipOf(s))
	pass := map[string][]byte{
		"icmp header cut":              pkttest.ICMPFrame(client.Addr(), vip.Addr(), pkttest.ICMP{Type: pkttest.ICMPEchoRequest}, nil)[:pkttest.EthLen+pkttest.IPv4Len+4],
		"icmp error, no quote":         errFrame[:pkttest.EthLen+pkttest.IPv4Len+pkttest.ICMPLen],
		"icmp error, quote cut":        errFrame[:pkttest.EthLen+pkttest.IPv4Len+pkttest.ICMPLen+pkttest.IPv4Len+2],
		"icmp error, quote ihl 4":      mangle(errFrame, func(ip []byte) { ip[pkttest.IPv4Len+pkttest.ICMPLen] = 0x44 }),
		"unknown protocol, header cut": eth(mangle(s, func(ip []byte) { ip[9] = 47 })[pkttest.EthLen : pkttest.EthLen+pkttest.IPv4Len+2]),
	}
	for name, in := range pass {
		ret, out := e.run(in)
		if ret != actOK || !bytes.Equal(out, in) {
			t.Errorf("%s: verdict %d, changed %v, want it passed untouched", name, ret, !bytes.Equal(out, in))
		}
	}
	if n := e.ctLen(); n != 0 {
		t.Errorf("%d ct entries, want 0", n)
	}
	e.wantMetrics(map[int]uint64{metricDropMalformed: uint64(len(drop))})
}

// Every cut of a SYN to the VIP short of its full length lacks a header the
// LB needs: all are dropped, none is rewritten or crashes the program.
func TestEveryTruncatedSYNIsDropped(t *testing.T) {
	e := newEnv(t)
	e.setService(vip, tcp, revNatID, be1)
	s := pkttest.TCPFrame(toVIP, syn, nil)
	for n := minRunnable; n < len(s); n++ {
		if ret, _ := e.run(s[:n]); ret != actShot {
			t.Errorf("SYN cut to %d of %d bytes: verdict %d, want drop", n, len(s), ret)
		}
	}
	e.wantMetrics(map[int]uint64{metricDropMalformed: uint64(len(s) - minRunnable)})
}

// Cuts of an ICMP error about a balanced flow: without the quoted ports it
// is not ours; with them it is translated.
func TestEveryTruncatedICMPErrorIsHandled(t *testing.T) {
	e := newEnv(t)
	e.setService(vip, tcp, revNatID, be1)
	dnated := e.mustRun(pkttest.TCPFrame(toVIP, syn, nil), actOK)
	full := pkttest.ICMPErrorFrame(be1.addr.Addr(), client.Addr(), pkttest.ICMPDestUnreach, pkttest.ICMPCodeFragNeeded, mtu, ipOf(dnated))
	const withPorts = pkttest.EthLen + pkttest.IPv4Len + pkttest.ICMPLen + pkttest.IPv4Len + 4
	var xlated uint64
	for n := minRunnable; n <= len(full); n++ {
		in := full[:n]
		ret, out := e.run(in)
		switch {
		case n < withPorts:
			if ret != actOK || !bytes.Equal(out, in) {
				t.Errorf("cut to %d: verdict %d, changed %v, want untouched", n, ret, !bytes.Equal(out, in))
			}
		default:
			// Cut frames disagree with their tot_len, so read raw offsets.
			xlated++
			src := netip.AddrFrom4([4]byte(out[pkttest.EthLen+12:]))
			qport := binary.BigEndian.Uint16(out[withPorts-2:])
			if ret != actOK || src != vip.Addr() || qport != vip.Port() {
				t.Errorf("cut to %d: verdict %d, outer source %v, quoted port %d; want translated", n, ret, src, qport)
			}
		}
	}
	e.wantMetrics(map[int]uint64{metricForwardNew: 1, metricICMPErrRevNat: xlated})
}

// The first fragment of a datagram carries the ports and is balanced; its
// checksum covers the whole datagram, which the incremental update keeps
// right. (Later fragments pass untouched: no fragment tracking yet.)
func TestFirstFragmentIsBalanced(t *testing.T) {
	e := newEnv(t)
	e.setService(vip, udp, revNatID, be1)
	dg := pkttest.UDP{SrcPort: client.Port(), DstPort: vip.Port()}.Marshal(client.Addr(), vip.Addr(), make([]byte, 64))
	ip := pkttest.IPv4{Src: client.Addr(), Dst: vip.Addr(), Proto: udp, ID: 11, MF: true}
	out := e.mustRun(eth(ip.Marshal(dg[:32])), actOK)

	dgBE := pkttest.UDP{SrcPort: client.Port(), DstPort: be1.addr.Port()}.Marshal(client.Addr(), be1.addr.Addr(), make([]byte, 64))
	ip.Dst = be1.addr.Addr()
	wantFrame(t, out, eth(ip.Marshal(dgBE[:32])))
}
