package loadgen

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fastpath-net/fastpath/internal/nettopo"
)

// Server is the backend: it accepts, answers every request with a fixed
// reply that starts with its name and a newline, and closes after a request
// that asks for it (OpClose); after OpStream it reads and discards until
// the client closes. Go's netpoller serves all connections of the process.
// (A variant with threads blocked in accept(2)/read(2) did no better on
// short connections and worse on kept-alive ones: with more blocked threads
// than Ps the runtime keeps handing Ps around.)
type Server struct {
	ln       net.Listener
	reply    [ReplySize]byte
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	accepted atomic.Uint64
}

// StartServer listens on addr (ip:port) inside ns. name is what Ask reads
// back ("be1:8080"); at most ReplySize-1 bytes.
func StartServer(ns *nettopo.NS, addr, name string) (*Server, error) {
	if len(name) >= ReplySize || bytes.ContainsAny([]byte(name), "\n\x00") {
		return nil, fmt.Errorf("server name %q: want under %d bytes, no newline", name, ReplySize)
	}
	ln, err := ns.Listen("tcp4", addr)
	if err != nil {
		return nil, fmt.Errorf("server %s in %s: %w", addr, ns.Name, err)
	}
	s := &Server{ln: ln, conns: map[net.Conn]struct{}{}}
	copy(s.reply[:], name+"\n")
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

// Accepted is the number of connections accepted so far.
func (s *Server) Accepted() uint64 { return s.accepted.Load() }

func (s *Server) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and the like: back off, do not spin.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		s.accepted.Add(1)
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go s.handle(c)
	}
}

func (s *Server) handle(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	var req [RequestSize]byte
	for {
		if _, err := io.ReadFull(c, req[:]); err != nil {
			return
		}
		if req[0] == OpStream {
			sink := make([]byte, 256<<10)
			for {
				if _, err := c.Read(sink); err != nil {
					return
				}
			}
		}
		if _, err := c.Write(s.reply[:]); err != nil {
			return
		}
		if req[0] == OpClose {
			return
		}
	}
}

// Close stops the server and ends its open connections.
func (s *Server) Close() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// Ask sends one closing request on c and returns the name the server
// answered with.
func Ask(c net.Conn) (string, error) {
	var req [RequestSize]byte
	req[0] = OpClose
	if _, err := c.Write(req[:]); err != nil {
		return "", err
	}
	var buf [ReplySize]byte
	if _, err := io.ReadFull(c, buf[:]); err != nil {
		return "", err
	}
	name, _, ok := bytes.Cut(buf[:], []byte("\n"))
	if !ok {
		return "", errors.New("reply without a name")
	}
	return string(name), nil
}
