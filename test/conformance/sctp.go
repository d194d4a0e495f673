package conformance

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/fastpath-net/fastpath/internal/nettopo"
)

// SCTP without SCTP sockets: this kernel has CONFIG_IP_SCTP off, so no
// socket can speak SCTP, but raw IP sockets of protocol 132 still send and
// receive its packets, and netfilter (conntrack, NAT, xt_sctp) and the TC
// datapath handle them all the same. A probe sends one INIT chunk with a
// fresh source port and initiate tag from the client; every backend has a
// raw socket that records the INITs delivered to it. Which backend saw the
// tag, on which destination port, from which source, and whether the
// CRC32c still holds after NAT, is the probe's outcome. No association is
// ever set up: the proxies' choice is made on the first packet.

const protoSCTP = 132

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// sctpSeen is one INIT as a backend received it.
type sctpSeen struct {
	host  string
	dport uint16
	src   netip.Addr
	crcOK bool
}

// sctpSniffers are the raw receivers of one topology's backends.
type sctpSniffers struct {
	mu    sync.Mutex
	seen  map[uint32]sctpSeen // by initiate tag
	files []*os.File
	wg    sync.WaitGroup
}

func startSCTPSniffers(hosts []*Host) (*sctpSniffers, error) {
	s := &sctpSniffers{seen: map[uint32]sctpSeen{}}
	for _, h := range hosts {
		var fd int
		err := h.NS.Do(func() (err error) {
			fd, err = syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, protoSCTP)
			return err
		})
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("sctp raw socket in %s: %w", h.Name, err)
		}
		f := os.NewFile(uintptr(fd), "sctp-"+h.Name)
		s.files = append(s.files, f)
		s.wg.Add(1)
		go s.read(h.Name, f)
	}
	return s, nil
}

func (s *sctpSniffers) read(host string, f *os.File) {
	defer s.wg.Done()
	buf := make([]byte, 2048)
	for {
		n, err := f.Read(buf)
		if err != nil {
			return // closed
		}
		pkt := buf[:n]
		if len(pkt) < 20 {
			continue
		}
		ihl := int(pkt[0]&0x0f) * 4
		if len(pkt) < ihl+12+20 || pkt[ihl+12] != 1 { // not an INIT
			continue
		}
		src, _ := netip.AddrFromSlice(pkt[12:16])
		sctp := pkt[ihl:]
		got := binary.LittleEndian.Uint32(sctp[8:12])
		check := make([]byte, len(sctp))
		copy(check, sctp)
		binary.LittleEndian.PutUint32(check[8:12], 0)
		tag := binary.BigEndian.Uint32(sctp[16:20])
		s.mu.Lock()
		s.seen[tag] = sctpSeen{
			host: host, dport: binary.BigEndian.Uint16(sctp[2:4]), src: src,
			crcOK: crc32.Checksum(check, castagnoli) == got,
		}
		s.mu.Unlock()
	}
}

func (s *sctpSniffers) take(tag uint32) (sctpSeen, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.seen[tag]
	delete(s.seen, tag)
	return v, ok
}

func (s *sctpSniffers) Close() {
	for _, f := range s.files {
		f.Close()
	}
	s.wg.Wait()
}

// sctpInit is an SCTP packet with one INIT chunk and a correct CRC32c.
func sctpInit(sport, dport uint16, tag uint32) []byte {
	p := make([]byte, 32)
	binary.BigEndian.PutUint16(p[0:], sport)
	binary.BigEndian.PutUint16(p[2:], dport)
	// p[4:8] verification tag: 0 in an INIT; p[8:12] checksum, below.
	p[12] = 1                                 // chunk type INIT
	binary.BigEndian.PutUint16(p[14:], 20)    // chunk length
	binary.BigEndian.PutUint32(p[16:], tag)   // initiate tag
	binary.BigEndian.PutUint32(p[20:], 1<<16) // a_rwnd
	binary.BigEndian.PutUint16(p[24:], 1)     // outbound streams
	binary.BigEndian.PutUint16(p[26:], 1)     // inbound streams
	binary.BigEndian.PutUint32(p[28:], tag)   // initial TSN
	binary.LittleEndian.PutUint32(p[8:], crc32.Checksum(p, castagnoli))
	return p
}

// probeSCTP sends n INITs from ns to addr, each from a fresh source port
// with a fresh tag, and reports which backend each reached, if any, within
// timeout, stopping after maxTimeouts INITs that reached nobody. An INIT
// that arrives with a broken CRC32c is reported as such.
func probeSCTP(ns *nettopo.NS, sn *sctpSniffers, addr string, n, maxTimeouts int, timeout time.Duration) ([]attempt, error) {
	dst, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, err
	}
	var out []attempt
	for range n {
		var rnd [6]byte
		_, _ = rand.Read(rnd[:])
		sport := 20000 + binary.BigEndian.Uint16(rnd[0:2])%40000
		tag := binary.BigEndian.Uint32(rnd[2:6]) | 1
		pkt := sctpInit(sport, dst.Port(), tag)
		err := ns.Do(func() error {
			fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, protoSCTP)
			if err != nil {
				return err
			}
			defer syscall.Close(fd)
			return syscall.Sendto(fd, pkt, 0, &syscall.SockaddrInet4{Addr: dst.Addr().As4()})
		})
		if err != nil {
			return nil, fmt.Errorf("send SCTP INIT: %w", err)
		}
		a := attempt{Result: Timeout}
		for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
			if seen, ok := sn.take(tag); ok {
				a = attempt{Result: fmt.Sprintf("%s:%d", seen.host, seen.dport), Source: seen.src}
				if !seen.crcOK {
					a.Result += "(bad-crc32c)"
				}
				break
			}
		}
		out = append(out, a)
		if a.Result == Timeout {
			if maxTimeouts--; maxTimeouts <= 0 {
				break
			}
		}
	}
	return out, nil
}
