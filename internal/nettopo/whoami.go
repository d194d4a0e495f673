package nettopo

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"
)

// Whoami is a TCP and UDP server that answers with its name, so a client
// can tell which backend a Service sent it to. Over TCP it first writes
// "<name>\n", then answers every line L with "<name> L\n" until the client
// closes; a long-lived connection can be probed again and again. Over UDP
// every datagram is answered with "<name> <datagram>".
type Whoami struct {
	Name string
	tcp  net.Listener
	udp  net.PacketConn
	wg   sync.WaitGroup
	mu   sync.Mutex
	conn map[net.Conn]struct{}
}

// StartWhoami listens on addr (host:port, TCP and UDP) inside ns.
func StartWhoami(ns *NS, name, addr string) (*Whoami, error) {
	tcp, err := ns.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("whoami %s: %w", name, err)
	}
	udp, err := ns.ListenPacket("udp", addr)
	if err != nil {
		tcp.Close()
		return nil, fmt.Errorf("whoami %s: %w", name, err)
	}
	w := &Whoami{Name: name, tcp: tcp, udp: udp, conn: map[net.Conn]struct{}{}}
	w.wg.Add(2)
	go w.serveTCP()
	go w.serveUDP()
	return w, nil
}

func (w *Whoami) serveTCP() {
	defer w.wg.Done()
	for {
		c, err := w.tcp.Accept()
		if err != nil {
			return
		}
		w.mu.Lock()
		w.conn[c] = struct{}{}
		w.mu.Unlock()
		w.wg.Add(1)
		go w.answer(c)
	}
}

func (w *Whoami) answer(c net.Conn) {
	defer w.wg.Done()
	defer func() {
		w.mu.Lock()
		delete(w.conn, c)
		w.mu.Unlock()
		c.Close()
	}()
	if _, err := fmt.Fprintf(c, "%s\n", w.Name); err != nil {
		return
	}
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		if _, err := fmt.Fprintf(c, "%s %s\n", w.Name, sc.Text()); err != nil {
			return
		}
	}
}

func (w *Whoami) serveUDP() {
	defer w.wg.Done()
	buf := make([]byte, 2048)
	for {
		n, from, err := w.udp.ReadFrom(buf)
		if err != nil {
			return
		}
		_, _ = w.udp.WriteTo([]byte(w.Name+" "+string(buf[:n])), from)
	}
}

// Close stops the server and ends its open connections.
func (w *Whoami) Close() {
	w.tcp.Close()
	w.udp.Close()
	w.mu.Lock()
	for c := range w.conn {
		c.Close()
	}
	w.mu.Unlock()
	w.wg.Wait()
}

// AskTCP connects to addr from inside ns and returns the name that answers.
func AskTCP(ns *NS, addr string, timeout time.Duration) (string, error) {
	var name string
	err := ns.Do(func() error {
		c, err := net.DialTimeout("tcp", addr, timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(timeout))
		name, err = bufio.NewReader(c).ReadString('\n')
		name = strings.TrimSpace(name)
		return err
	})
	return name, err
}

// AskUDP sends one datagram to addr from inside ns and returns the name
// that answers and the address the answer came from.
func AskUDP(ns *NS, addr string, timeout time.Duration) (name string, from string, err error) {
	return AskUDPFrom(ns, 0, addr, timeout)
}

// AskUDPFrom is AskUDP from source port sport (0: any). A caller that
// must not reuse a flow that a conntrack may still remember picks its own.
func AskUDPFrom(ns *NS, sport uint16, addr string, timeout time.Duration) (name string, from string, err error) {
	err = ns.Do(func() error {
		c, err := net.ListenPacket("udp", fmt.Sprintf(":%d", sport))
		if err != nil {
			return err
		}
		defer c.Close()
		dst, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			return err
		}
		_ = c.SetDeadline(time.Now().Add(timeout))
		if _, err := c.WriteTo([]byte("ping"), dst); err != nil {
			return err
		}
		buf := make([]byte, 512)
		n, src, err := c.ReadFrom(buf)
		if err != nil {
			return err
		}
		name, _, _ = strings.Cut(string(buf[:n]), " ")
		from = src.String()
		return nil
	})
	return name, from, err
}

// Session is a long-lived TCP connection to a Whoami, opened from a namespace.
type Session struct {
	Backend string // the name the server greeted with
	c       net.Conn
	r       *bufio.Reader
}

// OpenSession connects to addr from inside ns and reads the greeting.
func OpenSession(ns *NS, addr string, timeout time.Duration) (*Session, error) {
	var s *Session
	err := ns.Do(func() error {
		c, err := net.DialTimeout("tcp", addr, timeout)
		if err != nil {
			return err
		}
		s = &Session{c: c, r: bufio.NewReader(c)}
		_ = c.SetDeadline(time.Now().Add(timeout))
		name, err := s.r.ReadString('\n')
		if err != nil {
			c.Close()
			return err
		}
		s.Backend = strings.TrimSpace(name)
		return nil
	})
	return s, err
}

// Ping sends a line and checks that the same backend answers it.
func (s *Session) Ping(msg string, timeout time.Duration) error {
	_ = s.c.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(s.c, "%s\n", msg); err != nil {
		return err
	}
	line, err := s.r.ReadString('\n')
	if err != nil {
		return err
	}
	want := s.Backend + " " + msg + "\n"
	if line != want {
		return fmt.Errorf("session answered %q, want %q", line, want)
	}
	return nil
}

// RemoteAddr is the peer address as the client's socket sees it.
func (s *Session) RemoteAddr() net.Addr { return s.c.RemoteAddr() }

// Close ends the session.
func (s *Session) Close() error {
	if s == nil {
		return errors.New("nil session")
	}
	return s.c.Close()
}
