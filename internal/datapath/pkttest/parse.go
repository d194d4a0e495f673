package pkttest

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// Packet is a parsed ethernet frame. IPv4 fields are set only for IPv4.
type Packet struct {
	DstMAC, SrcMAC MAC
	EtherType      uint16
	IP             IPv4Header
	// Payload is the IPv4 payload as tot_len delimits it.
	Payload []byte
	// Transport fields, set for TCP, UDP and SCTP.
	SrcPort, DstPort uint16
	TCPFlags         uint8
	// ICMP fields, set for ICMP.
	ICMPType, ICMPCode uint8
	ICMPRest           uint32
	// Quote is the packet an ICMP error quotes, nil for other packets.
	Quote *Quoted
}

// IPv4Header is a parsed IPv4 header.
type IPv4Header struct {
	Src, Dst netip.Addr
	Proto    uint8
	TOS      uint8
	TTL      uint8
	ID       uint16
	Frag     uint16 // flags and fragment offset, as on the wire
	TotLen   int
	Checksum uint16
	Header   []byte // the header bytes, options included
}

// Quoted is the packet inside an ICMP error: its IPv4 header and whatever
// part of the transport header was quoted.
type Quoted struct {
	IP               IPv4Header
	L4               []byte
	SrcPort, DstPort uint16 // when at least 4 bytes are quoted
}

// Src and Dst return the transport endpoints of a TCP/UDP/SCTP packet.
func (p Packet) Src() netip.AddrPort { return netip.AddrPortFrom(p.IP.Src, p.SrcPort) }
func (p Packet) Dst() netip.AddrPort { return netip.AddrPortFrom(p.IP.Dst, p.DstPort) }

// Flow returns the packet's direction as a Flow.
func (p Packet) Flow() Flow { return Flow{Src: p.Src(), Dst: p.Dst()} }

// Parse reads an ethernet frame. It fails on anything it cannot read
// completely, so tests can use it to assert a frame is well formed.
func Parse(frame []byte) (Packet, error) {
	var p Packet
	if len(frame) < EthLen {
		return p, fmt.Errorf("frame of %d bytes: shorter than an ethernet header", len(frame))
	}
	copy(p.DstMAC[:], frame[0:6])
	copy(p.SrcMAC[:], frame[6:12])
	p.EtherType = binary.BigEndian.Uint16(frame[12:14])
	if p.EtherType != EtherTypeIPv4 {
		return p, nil
	}
	ip, rest, err := parseIPv4(frame[EthLen:], true)
	if err != nil {
		return p, err
	}
	p.IP, p.Payload = ip, rest
	if ip.Frag&0x1fff != 0 {
		return p, nil
	}
	switch ip.Proto {
	case ProtoTCP:
		if len(rest) < TCPLen {
			return p, fmt.Errorf("tcp: %d bytes, header needs %d", len(rest), TCPLen)
		}
		p.TCPFlags = rest[13]
		p.SrcPort, p.DstPort = ports(rest)
	case ProtoUDP:
		if len(rest) < UDPLen {
			return p, fmt.Errorf("udp: %d bytes, header needs %d", len(rest), UDPLen)
		}
		p.SrcPort, p.DstPort = ports(rest)
	case ProtoSCTP:
		if len(rest) < SCTPLen {
			return p, fmt.Errorf("sctp: %d bytes, header needs %d", len(rest), SCTPLen)
		}
		p.SrcPort, p.DstPort = ports(rest)
	case ProtoICMP:
		if len(rest) < ICMPLen {
			return p, fmt.Errorf("icmp: %d bytes, header needs %d", len(rest), ICMPLen)
		}
		p.ICMPType, p.ICMPCode = rest[0], rest[1]
		p.ICMPRest = binary.BigEndian.Uint32(rest[4:8])
		if isICMPError(p.ICMPType) {
			q, err := parseQuote(rest[ICMPLen:])
			if err != nil {
				return p, err
			}
			p.Quote = &q
		}
	}
	return p, nil
}

func isICMPError(t uint8) bool { return t == 3 || t == 4 || t == 5 || t == 11 || t == 12 }

func ports(l4 []byte) (uint16, uint16) {
	return binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4])
}

func parseQuote(b []byte) (Quoted, error) {
	var q Quoted
	ip, rest, err := parseIPv4(b, false)
	if err != nil {
		return q, fmt.Errorf("icmp quote: %w", err)
	}
	q.IP, q.L4 = ip, rest
	if len(rest) >= 4 {
		q.SrcPort, q.DstPort = ports(rest)
	}
	return q, nil
}

// parseIPv4 reads a header and returns the payload. A quoted packet is
// shorter than its tot_len; whole says whether tot_len must fit.
func parseIPv4(b []byte, whole bool) (IPv4Header, []byte, error) {
	var h IPv4Header
	if len(b) < IPv4Len {
		return h, nil, fmt.Errorf("ipv4: %d bytes, header needs %d", len(b), IPv4Len)
	}
	if b[0]>>4 != 4 {
		return h, nil, fmt.Errorf("ipv4: version %d", b[0]>>4)
	}
	hl := int(b[0]&0x0f) * 4
	if hl < IPv4Len || hl > len(b) {
		return h, nil, fmt.Errorf("ipv4: header length %d with %d bytes", hl, len(b))
	}
	h.TOS = b[1]
	h.TotLen = int(binary.BigEndian.Uint16(b[2:4]))
	h.ID = binary.BigEndian.Uint16(b[4:6])
	h.Frag = binary.BigEndian.Uint16(b[6:8])
	h.TTL = b[8]
	h.Proto = b[9]
	h.Checksum = binary.BigEndian.Uint16(b[10:12])
	h.Src = netip.AddrFrom4([4]byte(b[12:16]))
	h.Dst = netip.AddrFrom4([4]byte(b[16:20]))
	h.Header = b[:hl]
	end := len(b)
	if whole {
		if h.TotLen < hl || h.TotLen > len(b) {
			return h, nil, fmt.Errorf("ipv4: tot_len %d with header %d and %d bytes", h.TotLen, hl, len(b))
		}
		end = h.TotLen
	}
	return h, b[hl:end], nil
}
