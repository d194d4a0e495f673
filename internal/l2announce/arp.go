// Package l2announce makes LoadBalancer IPs reachable on a plain L2
// segment, as MetalLB's layer2 mode does: for every IP, the nodes allowed
// to serve it elect one holder through a Kubernetes Lease, and only that
// node answers ARP requests for the IP on the announce interfaces (and
// sends a gratuitous ARP when it wins, so neighbours switch at once).
package l2announce

import (
	"encoding/binary"
	"net"
	"net/netip"
)

// Ethernet + ARP for IPv4 over Ethernet (RFC 826): 14 + 28 bytes.
const (
	ethHeaderLen = 14
	arpLen       = 28
	frameLen     = ethHeaderLen + arpLen
	etherTypeARP = 0x0806
	etherTypeIP4 = 0x0800
	arpRequest   = 1
	arpReply     = 2
)

var broadcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// request is an ARP request for an IPv4 address.
type request struct {
	senderMAC net.HardwareAddr
	senderIP  netip.Addr
	targetIP  netip.Addr
}

// parseRequest decodes an Ethernet frame holding an ARP request for an
// IPv4 address; ok is false for anything else (replies, other hardware or
// protocol types, short frames).
func parseRequest(frame []byte) (req request, ok bool) {
	if len(frame) < frameLen || binary.BigEndian.Uint16(frame[12:14]) != etherTypeARP {
		return request{}, false
	}
	a := frame[ethHeaderLen:]
	if binary.BigEndian.Uint16(a[0:2]) != 1 || binary.BigEndian.Uint16(a[2:4]) != etherTypeIP4 ||
		a[4] != 6 || a[5] != 4 || binary.BigEndian.Uint16(a[6:8]) != arpRequest {
		return request{}, false
	}
	return request{
		senderMAC: net.HardwareAddr(a[8:14]),
		senderIP:  netip.AddrFrom4([4]byte(a[14:18])),
		targetIP:  netip.AddrFrom4([4]byte(a[24:28])),
	}, true
}

// gratuitous says whether req announces its sender's own address (sender
// and target IP equal, RFC 5227): nobody is asking, it must not be answered.
func (r request) gratuitous() bool { return r.senderIP == r.targetIP }

// buildFrame writes one Ethernet ARP frame into b (at least frameLen long).
func buildFrame(b []byte, ethDst net.HardwareAddr, op uint16, sha net.HardwareAddr, spa netip.Addr, tha net.HardwareAddr, tpa netip.Addr) []byte {
	b = b[:frameLen]
	copy(b[0:6], ethDst)
	copy(b[6:12], sha)
	binary.BigEndian.PutUint16(b[12:14], etherTypeARP)
	a := b[ethHeaderLen:]
	binary.BigEndian.PutUint16(a[0:2], 1) // Ethernet
	binary.BigEndian.PutUint16(a[2:4], etherTypeIP4)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:8], op)
	copy(a[8:14], sha)
	s, t := spa.As4(), tpa.As4()
	copy(a[14:18], s[:])
	copy(a[18:24], tha)
	copy(a[24:28], t[:])
	return b
}

// buildReply writes into b the reply telling req's sender that req's
// target IP is at mac, sent straight to the asker.
func buildReply(b []byte, mac net.HardwareAddr, req request) []byte {
	return buildFrame(b, req.senderMAC, arpReply, mac, req.targetIP, req.senderMAC, req.senderIP)
}

// buildGratuitous writes into b a broadcast ARP request with ip as both
// sender and target: every neighbour holding an entry for ip points it at
// mac at once (Linux overrides its entry for such a gratuitous ARP even
// within locktime, and whatever arp_accept says about creating entries).
func buildGratuitous(b []byte, mac net.HardwareAddr, ip netip.Addr) []byte {
	return buildFrame(b, broadcast, arpRequest, mac, ip, broadcast, ip)
}

// buildRequest writes into b a broadcast request from (mac, from) asking
// for target; the tests probe who answers with it.
func buildRequest(b []byte, mac net.HardwareAddr, from, target netip.Addr) []byte {
	return buildFrame(b, broadcast, arpRequest, mac, from, make(net.HardwareAddr, 6), target)
}

// parseReply decodes an ARP reply: who (MAC) says it has which IP.
func parseReply(frame []byte) (mac net.HardwareAddr, ip netip.Addr, ok bool) {
	if len(frame) < frameLen || binary.BigEndian.Uint16(frame[12:14]) != etherTypeARP {
		return nil, netip.Addr{}, false
	}
	a := frame[ethHeaderLen:]
	if binary.BigEndian.Uint16(a[6:8]) != arpReply || a[4] != 6 || a[5] != 4 {
		return nil, netip.Addr{}, false
	}
	return net.HardwareAddr(a[8:14]), netip.AddrFrom4([4]byte(a[14:18])), true
}
