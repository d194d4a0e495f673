// Package pkttest builds and inspects ethernet/IPv4 frames for datapath
// tests: a small builder, a parser, and checksum verification computed from
// scratch, so that a test never trusts the code under test to check its own
// arithmetic. It has no dependencies beyond the standard library.
package pkttest

import (
	"encoding/binary"
	"hash/crc32"
	"net/netip"
)

// MAC is an ethernet address.
type MAC [6]byte

// Addresses the convenience builders use: frames go from a peer to the node.
var (
	PeerMAC = MAC{0x02, 0, 0, 0, 0, 0x01}
	NodeMAC = MAC{0x02, 0, 0, 0, 0, 0x02}
)

// EtherTypes.
const (
	EtherTypeIPv4 uint16 = 0x0800
	EtherTypeARP  uint16 = 0x0806
	EtherTypeIPv6 uint16 = 0x86dd
)

// IP protocol numbers.
const (
	ProtoICMP uint8 = 1
	ProtoTCP  uint8 = 6
	ProtoUDP  uint8 = 17
	ProtoSCTP uint8 = 132
)

// TCP flags.
const (
	FIN uint8 = 0x01
	SYN uint8 = 0x02
	RST uint8 = 0x04
	PSH uint8 = 0x08
	ACK uint8 = 0x10
)

// ICMP types and codes the datapath deals with.
const (
	ICMPEchoReply      uint8 = 0
	ICMPDestUnreach    uint8 = 3
	ICMPEchoRequest    uint8 = 8
	ICMPTimeExceeded   uint8 = 11
	ICMPCodePortUnr    uint8 = 3
	ICMPCodeFragNeeded uint8 = 4
)

// Sizes of fixed headers.
const (
	EthLen  = 14
	IPv4Len = 20
	TCPLen  = 20
	UDPLen  = 8
	SCTPLen = 12
	ICMPLen = 8
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Ether returns an ethernet frame around payload.
func Ether(dst, src MAC, etherType uint16, payload []byte) []byte {
	b := make([]byte, EthLen, EthLen+len(payload))
	copy(b[0:6], dst[:])
	copy(b[6:12], src[:])
	binary.BigEndian.PutUint16(b[12:14], etherType)
	return append(b, payload...)
}

// IPv4 is an IPv4 header to build. Zero values give a plain header: no
// options, TTL 64, no fragmentation.
type IPv4 struct {
	Src, Dst netip.Addr
	Proto    uint8
	TOS      uint8
	ID       uint16
	DF, MF   bool
	FragOff  uint16 // in 8-byte units
	TTL      uint8  // 0 means 64
	Options  []byte // the caller pads them to a multiple of 4
}

// Marshal returns the header followed by payload, with tot_len and the
// header checksum filled in.
func (h IPv4) Marshal(payload []byte) []byte {
	hl := IPv4Len + len(h.Options)
	b := make([]byte, hl, hl+len(payload))
	b[0] = 4<<4 | byte(hl/4)
	b[1] = h.TOS
	binary.BigEndian.PutUint16(b[2:4], uint16(hl+len(payload)))
	binary.BigEndian.PutUint16(b[4:6], h.ID)
	frag := h.FragOff & 0x1fff
	if h.DF {
		frag |= 0x4000
	}
	if h.MF {
		frag |= 0x2000
	}
	binary.BigEndian.PutUint16(b[6:8], frag)
	b[8] = h.TTL
	if b[8] == 0 {
		b[8] = 64
	}
	b[9] = h.Proto
	src, dst := h.Src.As4(), h.Dst.As4()
	copy(b[12:16], src[:])
	copy(b[16:20], dst[:])
	copy(b[20:], h.Options)
	binary.BigEndian.PutUint16(b[10:12], Checksum(b))
	return append(b, payload...)
}

// TCP is a TCP header to build.
type TCP struct {
	SrcPort, DstPort uint16
	Seq, Ack         uint32
	Flags            uint8
	Window           uint16 // 0 means 65535
	Options          []byte // the caller pads them to a multiple of 4
}

// Marshal returns the segment with its checksum over the IPv4 pseudo header.
func (h TCP) Marshal(src, dst netip.Addr, payload []byte) []byte {
	hl := TCPLen + len(h.Options)
	b := make([]byte, hl, hl+len(payload))
	binary.BigEndian.PutUint16(b[0:2], h.SrcPort)
	binary.BigEndian.PutUint16(b[2:4], h.DstPort)
	binary.BigEndian.PutUint32(b[4:8], h.Seq)
	binary.BigEndian.PutUint32(b[8:12], h.Ack)
	b[12] = byte(hl/4) << 4
	b[13] = h.Flags
	w := h.Window
	if w == 0 {
		w = 65535
	}
	binary.BigEndian.PutUint16(b[14:16], w)
	copy(b[20:], h.Options)
	b = append(b, payload...)
	binary.BigEndian.PutUint16(b[16:18], Checksum(pseudoHeader(src, dst, ProtoTCP, len(b)), b))
	return b
}

// UDP is a UDP header to build.
type UDP struct {
	SrcPort, DstPort uint16
	NoChecksum       bool // send checksum 0, "none"
}

// Marshal returns the datagram; a computed checksum of 0 is sent as 0xffff.
func (h UDP) Marshal(src, dst netip.Addr, payload []byte) []byte {
	b := make([]byte, UDPLen, UDPLen+len(payload))
	binary.BigEndian.PutUint16(b[0:2], h.SrcPort)
	binary.BigEndian.PutUint16(b[2:4], h.DstPort)
	binary.BigEndian.PutUint16(b[4:6], uint16(UDPLen+len(payload)))
	b = append(b, payload...)
	if !h.NoChecksum {
		c := Checksum(pseudoHeader(src, dst, ProtoUDP, len(b)), b)
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(b[6:8], c)
	}
	return b
}

// SCTP is an SCTP common header to build; chunks are the caller's payload.
type SCTP struct {
	SrcPort, DstPort uint16
	Tag              uint32
	NoChecksum       bool // leave the CRC32c 0 (offloaded, or RFC 9653)
}

// Marshal returns the packet with its CRC32c, stored little-endian as
// the kernel does.
func (h SCTP) Marshal(payload []byte) []byte {
	b := make([]byte, SCTPLen, SCTPLen+len(payload))
	binary.BigEndian.PutUint16(b[0:2], h.SrcPort)
	binary.BigEndian.PutUint16(b[2:4], h.DstPort)
	binary.BigEndian.PutUint32(b[4:8], h.Tag)
	b = append(b, payload...)
	if !h.NoChecksum {
		binary.LittleEndian.PutUint32(b[8:12], crc32.Checksum(b, castagnoli))
	}
	return b
}

// ICMP is an ICMP header to build.
type ICMP struct {
	Type, Code uint8
	Rest       uint32 // identifier/sequence, next-hop MTU, or unused
}

// Marshal returns the message with its checksum.
func (h ICMP) Marshal(payload []byte) []byte {
	b := make([]byte, ICMPLen, ICMPLen+len(payload))
	b[0], b[1] = h.Type, h.Code
	binary.BigEndian.PutUint32(b[4:8], h.Rest)
	b = append(b, payload...)
	binary.BigEndian.PutUint16(b[2:4], Checksum(b))
	return b
}

func pseudoHeader(src, dst netip.Addr, proto uint8, l4len int) []byte {
	b := make([]byte, 12)
	s, d := src.As4(), dst.As4()
	copy(b[0:4], s[:])
	copy(b[4:8], d[:])
	b[9] = proto
	binary.BigEndian.PutUint16(b[10:12], uint16(l4len))
	return b
}

// Checksum returns the Internet checksum (RFC 1071) of the concatenation
// of chunks. Over data that includes a correct checksum field it returns 0.
func Checksum(chunks ...[]byte) uint16 {
	var all []byte
	for _, c := range chunks {
		all = append(all, c...)
	}
	var sum uint32
	for i := 0; i+1 < len(all); i += 2 {
		sum += uint32(all[i])<<8 | uint32(all[i+1])
	}
	if len(all)%2 == 1 {
		sum += uint32(all[len(all)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
