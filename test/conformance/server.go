package conformance

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fastpath-net/fastpath/internal/nettopo"
)

// server answers every TCP connection and every UDP datagram with
// "<name> <peer address>\n", so a probe learns both which backend (and
// port) it reached and which source address the backend saw.
type server struct {
	name string
	tcp  net.Listener
	udp  net.PacketConn
	wg   sync.WaitGroup
}

func startServer(ns *nettopo.NS, name, addr string) (*server, error) {
	tcp, err := ns.Listen("tcp4", addr)
	if err != nil {
		return nil, fmt.Errorf("server %s: %w", name, err)
	}
	udp, err := ns.ListenPacket("udp4", addr)
	if err != nil {
		tcp.Close()
		return nil, fmt.Errorf("server %s: %w", name, err)
	}
	s := &server{name: name, tcp: tcp, udp: udp}
	s.wg.Add(2)
	go s.serveTCP()
	go s.serveUDP()
	return s, nil
}

func (s *server) serveTCP() {
	defer s.wg.Done()
	for {
		c, err := s.tcp.Accept()
		if err != nil {
			return
		}
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		_, _ = fmt.Fprintf(c, "%s %s\n", s.name, c.RemoteAddr())
		c.Close()
	}
}

func (s *server) serveUDP() {
	defer s.wg.Done()
	buf := make([]byte, 2048)
	for {
		_, from, err := s.udp.ReadFrom(buf)
		if err != nil {
			return
		}
		_, _ = s.udp.WriteTo([]byte(fmt.Sprintf("%s %s\n", s.name, from)), from)
	}
}

func (s *server) Close() {
	s.tcp.Close()
	s.udp.Close()
	s.wg.Wait()
}

// Outcome classes of a probe attempt that reached no backend.
const (
	Refused     = "refused"     // RST or ICMP port-unreachable (REJECT)
	Timeout     = "timeout"     // no answer (DROP, or nothing listening for UDP)
	Unreachable = "unreachable" // ICMP host/net unreachable: nobody routes the VIP
)

// attempt is one connection's outcome: the backend ("be1:8080") or a class,
// and the peer address the backend saw.
type attempt struct {
	Result string
	Source netip.Addr
}

// probeN makes n connections (TCP) or exchanges (UDP, a connected socket
// per exchange so ICMP errors surface) from inside ns to addr, each with a
// fresh source port (UDP: sport, when not 0, for all of them: one flow),
// and returns every outcome. After maxTimeouts timeouts
// it stops early: the outcome set is already known to hold "timeout", and
// a broken side must not cost a second per attempt.
func probeN(ns *nettopo.NS, proto, addr string, sport, n, maxTimeouts int, timeout time.Duration) ([]attempt, error) {
	out := make([]attempt, 0, n)
	err := ns.Do(func() error {
		timeouts := 0
		for range n {
			a := probeOnce(proto, addr, sport, timeout)
			out = append(out, a)
			if a.Result == Timeout {
				if timeouts++; timeouts >= maxTimeouts {
					break
				}
			}
		}
		return nil
	})
	return out, err
}

func probeOnce(proto, addr string, sport int, timeout time.Duration) attempt {
	switch proto {
	case "tcp":
		c, err := net.DialTimeout("tcp4", addr, timeout)
		if err != nil {
			return attempt{Result: classify(err)}
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(timeout))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return attempt{Result: classify(err)}
		}
		return parseAnswer(line)
	case "udp":
		d := net.Dialer{Timeout: timeout}
		if sport != 0 {
			d.LocalAddr = &net.UDPAddr{Port: sport}
		}
		c, err := d.Dial("udp4", addr)
		if err != nil {
			return attempt{Result: classify(err)}
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(timeout))
		buf := make([]byte, 512)
		// One retry inside the budget: the first datagram of a flow can
		// be lost while neighbours resolve, and that is not what we test.
		for try := 0; ; try++ {
			if _, err := c.Write([]byte("ping")); err != nil {
				return attempt{Result: classify(err)}
			}
			_ = c.SetReadDeadline(time.Now().Add(timeout / 2))
			n, err := c.Read(buf)
			if err == nil {
				return parseAnswer(string(buf[:n]))
			}
			if try == 1 || !isTimeout(err) {
				return attempt{Result: classify(err)}
			}
		}
	}
	return attempt{Result: "error: unknown protocol " + proto}
}

func parseAnswer(line string) attempt {
	name, peer, _ := strings.Cut(strings.TrimSpace(line), " ")
	a := attempt{Result: name}
	if ap, err := netip.ParseAddrPort(peer); err == nil {
		a.Source = ap.Addr()
	}
	return a
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func classify(err error) string {
	switch {
	case isTimeout(err), errors.Is(err, os.ErrDeadlineExceeded):
		return Timeout
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET):
		return Refused
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return Unreachable
	}
	return "error: " + err.Error()
}
