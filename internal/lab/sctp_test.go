package lab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/fastpath-net/fastpath/internal/nettopo"
)

// sctpPeer sends and answers SCTP packets for one truth-table pod without
// an SCTP stack (this kernel has none: CONFIG_IP_SCTP is unset): a raw
// IPv4 socket of protocol 132 bound to the pod's address. A packet is an
// SCTP common header (ports, verification tag, CRC32c) followed by "REQ"
// or "REP <pod>"; no chunks, no association. That is all the datapath looks
// at (protocol and ports), so policy on SCTP ports meets real packets; an
// SCTP stack would have rejected them.
type sctpPeer struct {
	name    string // ns/pod, the answer
	conn    *net.IPConn
	mu      sync.Mutex
	waiting map[sctpFlow]chan string
}

// sctpFlow is a probe as its answer arrives: from the server's address and
// port to the client's port.
type sctpFlow struct {
	server     netip.Addr
	serverPort uint16
	clientPort uint16
}

const sctpHeaderLen = 12

var crc32c = crc32.MakeTable(crc32.Castagnoli)

func startSCTPPeer(ns *nettopo.NS, name string, addr netip.Addr) (*sctpPeer, error) {
	var conn *net.IPConn
	err := ns.Do(func() (err error) {
		conn, err = net.ListenIP("ip4:132", &net.IPAddr{IP: addr.AsSlice()})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sctp %s: %w", name, err)
	}
	p := &sctpPeer{name: name, conn: conn, waiting: map[sctpFlow]chan string{}}
	go p.serve()
	return p, nil
}

// serve answers requests to ports 80 and 81 and hands answers to the
// probes waiting for them, until the socket is closed.
func (p *sctpPeer) serve() {
	buf := make([]byte, 1500)
	for {
		n, from, err := p.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		src, ok := netip.AddrFromSlice(from.(*net.IPAddr).IP)
		if !ok || n < sctpHeaderLen {
			continue
		}
		sport, dport := binary.BigEndian.Uint16(buf[0:2]), binary.BigEndian.Uint16(buf[2:4])
		body := string(buf[sctpHeaderLen:n])
		switch {
		case body == "REQ" && (dport == 80 || dport == 81):
			_ = p.send(src.Unmap(), dport, sport, "REP "+p.name)
		case strings.HasPrefix(body, "REP "):
			p.mu.Lock()
			ch := p.waiting[sctpFlow{src.Unmap(), sport, dport}]
			p.mu.Unlock()
			if ch != nil {
				select {
				case ch <- strings.TrimPrefix(body, "REP "):
				default:
				}
			}
		}
	}
}

func (p *sctpPeer) send(to netip.Addr, sport, dport uint16, body string) error {
	pkt := make([]byte, sctpHeaderLen+len(body))
	binary.BigEndian.PutUint16(pkt[0:2], sport)
	binary.BigEndian.PutUint16(pkt[2:4], dport)
	binary.BigEndian.PutUint32(pkt[4:8], 1)
	copy(pkt[sctpHeaderLen:], body)
	binary.LittleEndian.PutUint32(pkt[8:12], crc32.Checksum(pkt, crc32c))
	_, err := p.conn.WriteTo(pkt, &net.IPAddr{IP: to.AsSlice()})
	return err
}

// errSCTPTimeout is a probe without an answer: its request or the answer
// was dropped.
var errSCTPTimeout = timeoutError("sctp: no answer")

type timeoutError string

func (e timeoutError) Error() string { return string(e) }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

// ask sends a request from sport to to:port and returns the name in the
// answer.
func (p *sctpPeer) ask(to netip.Addr, port, sport uint16, timeout time.Duration) (string, error) {
	f := sctpFlow{to, port, sport}
	ch := make(chan string, 1)
	p.mu.Lock()
	if p.waiting[f] != nil {
		p.mu.Unlock()
		return "", errors.New("sctp: this flow is already being probed")
	}
	p.waiting[f] = ch
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.waiting, f)
		p.mu.Unlock()
	}()
	if err := p.send(to, sport, port, "REQ"); err != nil {
		return "", err
	}
	select {
	case name := <-ch:
		return name, nil
	case <-time.After(timeout):
		return "", errSCTPTimeout
	}
}

func (p *sctpPeer) Close() { p.conn.Close() }
