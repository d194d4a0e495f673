package pkttest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// VerifyChecksums recomputes every checksum of an IPv4 frame from scratch:
// the IPv4 header; TCP and UDP over the pseudo header (UDP's 0 means none);
// SCTP's CRC32c; ICMP over the whole message and, for ICMP errors, the
// quoted IPv4 header. Non-IPv4 frames and later fragments have nothing to
// check. The error lists every checksum that is wrong.
func VerifyChecksums(frame []byte) error {
	p, err := Parse(frame)
	if err != nil {
		return err
	}
	if p.EtherType != EtherTypeIPv4 {
		return nil
	}
	var errs []error
	if Checksum(p.IP.Header) != 0 {
		errs = append(errs, fmt.Errorf("ipv4 header checksum %#04x is wrong", p.IP.Checksum))
	}
	if p.IP.Frag&0x1fff != 0 || p.IP.Frag&0x2000 != 0 {
		return errors.Join(errs...) // a fragment's transport checksum covers bytes not here
	}
	l4 := p.Payload
	switch p.IP.Proto {
	case ProtoTCP:
		if Checksum(pseudoHeader(p.IP.Src, p.IP.Dst, ProtoTCP, len(l4)), l4) != 0 {
			errs = append(errs, fmt.Errorf("tcp checksum %#04x is wrong", binary.BigEndian.Uint16(l4[16:18])))
		}
	case ProtoUDP:
		c := binary.BigEndian.Uint16(l4[6:8])
		if c != 0 && Checksum(pseudoHeader(p.IP.Src, p.IP.Dst, ProtoUDP, len(l4)), l4) != 0 {
			errs = append(errs, fmt.Errorf("udp checksum %#04x is wrong", c))
		}
	case ProtoSCTP:
		if err := verifySCTP(l4); err != nil {
			errs = append(errs, err)
		}
	case ProtoICMP:
		if Checksum(l4) != 0 {
			errs = append(errs, fmt.Errorf("icmp checksum %#04x is wrong", binary.BigEndian.Uint16(l4[2:4])))
		}
		if p.Quote != nil && Checksum(p.Quote.IP.Header) != 0 {
			errs = append(errs, fmt.Errorf("quoted ipv4 header checksum %#04x is wrong", p.Quote.IP.Checksum))
		}
	}
	return errors.Join(errs...)
}

// SCTPChecksum returns the CRC32c field of an SCTP packet and the value it
// should have, computed over the packet with the field zeroed.
func SCTPChecksum(sctp []byte) (got, want uint32) {
	got = binary.LittleEndian.Uint32(sctp[8:12])
	c := append([]byte(nil), sctp...)
	clear(c[8:12])
	return got, crc32.Checksum(c, castagnoli)
}

func verifySCTP(sctp []byte) error {
	got, want := SCTPChecksum(sctp)
	if got != 0 && got != want {
		return fmt.Errorf("sctp crc32c %#08x is wrong, want %#08x", got, want)
	}
	return nil
}
