package tclb_test

import (
	"net/netip"

	"github.com/fastpath-net/fastpath/internal/datapath/pkttest"
)

// The cast of most tests: one client, one service, two backends.
var (
	client   = addrPort("10.0.0.2:40000")
	vip      = addrPort("10.96.0.10:80")
	be1      = backend{id: 1, addr: addrPort("10.0.1.5:8080")}
	be2      = backend{id: 2, addr: addrPort("10.0.2.6:8080")}
	router   = netip.MustParseAddr("10.0.0.1")
	revNatID = uint32(7)

	toVIP = pkttest.Flow{Src: client, Dst: vip}
)

const (
	tcp  = pkttest.ProtoTCP
	udp  = pkttest.ProtoUDP
	sctp = pkttest.ProtoSCTP

	syn = pkttest.SYN
	ack = pkttest.ACK
	fin = pkttest.FIN
	rst = pkttest.RST
)

// to returns the flow from the client to addr.
func to(addr netip.AddrPort) pkttest.Flow { return pkttest.Flow{Src: client, Dst: addr} }

// from returns the flow from addr to the client.
func from(addr netip.AddrPort) pkttest.Flow { return pkttest.Flow{Src: addr, Dst: client} }

// withSport returns f with another source port.
func withSport(f pkttest.Flow, port uint16) pkttest.Flow {
	f.Src = netip.AddrPortFrom(f.Src.Addr(), port)
	return f
}

// withDport returns f with another destination port.
func withDport(f pkttest.Flow, port uint16) pkttest.Flow {
	f.Dst = netip.AddrPortFrom(f.Dst.Addr(), port)
	return f
}

// ipOf returns the IPv4 packet inside an ethernet frame.
func ipOf(frame []byte) []byte { return frame[pkttest.EthLen:] }
