package pkttest

import (
	"encoding/binary"
	"net/netip"
)

// Flow is one direction of a conversation: who sends to whom.
type Flow struct {
	Src, Dst netip.AddrPort
}

// Reverse returns the other direction.
func (f Flow) Reverse() Flow { return Flow{Src: f.Dst, Dst: f.Src} }

// The convenience builders below give every frame the same fixed fields (MACs
// PeerMAC -> NodeMAC, IPv4 ID 1, TTL 64, TCP sequence numbers), so a frame
// built for the translated tuple is byte-equal to a correct translation.

func (f Flow) ip(proto uint8) IPv4 {
	return IPv4{Src: f.Src.Addr(), Dst: f.Dst.Addr(), Proto: proto, ID: 1}
}

// TCPSegment returns the IPv4 packet of a TCP segment of f.
func TCPSegment(f Flow, flags uint8, payload []byte) []byte {
	return TCPFrame(f, flags, payload)[EthLen:]
}

// TCPFrame returns an ethernet frame of a TCP segment of f.
func TCPFrame(f Flow, flags uint8, payload []byte) []byte {
	return TCPFrameOpts(f, flags, nil, payload)
}

// TCPFrameOpts is TCPFrame with TCP options opts (a multiple of 4 bytes).
func TCPFrameOpts(f Flow, flags uint8, opts, payload []byte) []byte {
	tcp := TCP{SrcPort: f.Src.Port(), DstPort: f.Dst.Port(), Seq: 1000, Flags: flags, Options: opts}
	if flags&ACK != 0 {
		tcp.Ack = 2000
	}
	seg := f.ip(ProtoTCP).Marshal(tcp.Marshal(f.Src.Addr(), f.Dst.Addr(), payload))
	return Ether(NodeMAC, PeerMAC, EtherTypeIPv4, seg)
}

// SYNTimestamp returns the options of a Linux SYN with a timestamp (RFC
// 7323): MSS 1460, SACK permitted, TS, NOP, window scale 7.
func SYNTimestamp(tsval, tsecr uint32) []byte {
	b := []byte{2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0, 1, 3, 3, 7}
	binary.BigEndian.PutUint32(b[8:12], tsval)
	binary.BigEndian.PutUint32(b[12:16], tsecr)
	return b
}

// Timestamp returns the options of a Linux segment after the handshake:
// NOP, NOP, TS.
func Timestamp(tsval, tsecr uint32) []byte {
	b := []byte{1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[4:8], tsval)
	binary.BigEndian.PutUint32(b[8:12], tsecr)
	return b
}

// UDPDatagram returns the IPv4 packet of a UDP datagram of f.
func UDPDatagram(f Flow, payload []byte, noChecksum bool) []byte {
	udp := UDP{SrcPort: f.Src.Port(), DstPort: f.Dst.Port(), NoChecksum: noChecksum}
	return f.ip(ProtoUDP).Marshal(udp.Marshal(f.Src.Addr(), f.Dst.Addr(), payload))
}

// UDPFrame returns an ethernet frame of a UDP datagram of f.
func UDPFrame(f Flow, payload []byte) []byte {
	return Ether(NodeMAC, PeerMAC, EtherTypeIPv4, UDPDatagram(f, payload, false))
}

// UDPFrameNoChecksum is UDPFrame with checksum 0 ("none").
func UDPFrameNoChecksum(f Flow, payload []byte) []byte {
	return Ether(NodeMAC, PeerMAC, EtherTypeIPv4, UDPDatagram(f, payload, true))
}

// SCTPFrame returns an ethernet frame of an SCTP packet of f; chunks is the
// payload after the common header.
func SCTPFrame(f Flow, chunks []byte, noChecksum bool) []byte {
	sctp := SCTP{SrcPort: f.Src.Port(), DstPort: f.Dst.Port(), Tag: 0x01020304, NoChecksum: noChecksum}
	return Ether(NodeMAC, PeerMAC, EtherTypeIPv4, f.ip(ProtoSCTP).Marshal(sctp.Marshal(chunks)))
}

// ICMPFrame returns an ethernet frame of an ICMP message from src to dst.
func ICMPFrame(src, dst netip.Addr, h ICMP, payload []byte) []byte {
	ip := IPv4{Src: src, Dst: dst, Proto: ProtoICMP, ID: 1}
	return Ether(NodeMAC, PeerMAC, EtherTypeIPv4, ip.Marshal(h.Marshal(payload)))
}

// ICMPErrorFrame returns an ICMP error from src to dst quoting the IPv4
// header of packet and the first 8 bytes after it, as RFC 792 asks.
func ICMPErrorFrame(src, dst netip.Addr, typ, code uint8, rest uint32, packet []byte) []byte {
	return ICMPFrame(src, dst, ICMP{Type: typ, Code: code, Rest: rest}, Quote(packet))
}

// Quote returns the part of an IPv4 packet an ICMP error carries at least:
// its header with options and 8 bytes of what follows.
func Quote(packet []byte) []byte { return QuoteN(packet, 8) }

// QuoteN returns the IPv4 header of packet with options and n bytes of what
// follows, or less when the packet is shorter.
func QuoteN(packet []byte, n int) []byte {
	n += int(packet[0]&0x0f) * 4
	if n > len(packet) {
		n = len(packet)
	}
	return append([]byte(nil), packet[:n]...)
}

// Forwarded returns a copy of an ethernet/IPv4 frame as a router sends it
// on: MACs dst and src, the TTL one less and the header checksum computed
// afresh (not updated incrementally, so it checks code that does).
func Forwarded(frame []byte, dst, src MAC) []byte {
	out := append([]byte(nil), frame...)
	copy(out[0:6], dst[:])
	copy(out[6:12], src[:])
	ip := out[EthLen:]
	hl := int(ip[0]&0x0f) * 4
	ip[8]--
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:12], Checksum(ip[:hl]))
	return out
}
