package testenv

import (
	"io"
	"net"
	"sync"
)

// forwarder accepts connections on a listener in the caller's network
// namespace and pipes each one to the apiserver inside the env's namespace.
// The bytes are passed through untouched (TLS ends at the apiserver), and the
// listener is ours from the first moment, so no port can be taken between
// choosing it and using it.
type forwarder struct {
	ln     net.Listener
	dial   func() (net.Conn, error)
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

func newForwarder(listenAddr string, dial func() (net.Conn, error)) (*forwarder, error) {
	ln, err := net.Listen("tcp", listenAddr)
	if err != nil {
		return nil, err
	}
	f := &forwarder{ln: ln, dial: dial, conns: map[net.Conn]struct{}{}}
	f.wg.Add(1)
	go f.serve()
	return f, nil
}

func (f *forwarder) addr() string { return f.ln.Addr().String() }

func (f *forwarder) serve() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return // closed by close()
		}
		f.wg.Add(1)
		go f.pipe(c)
	}
}

// track registers c so close can cut it; false once the forwarder is closed.
func (f *forwarder) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

func (f *forwarder) pipe(client net.Conn) {
	defer f.wg.Done()
	defer client.Close()
	server, err := f.dial()
	if err != nil {
		return // the client sees a reset, as if the apiserver were down
	}
	defer server.Close()
	if !f.track(client) || !f.track(server) {
		return
	}
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(server, client); closeWrite(server); done <- struct{}{} }()
	go func() { _, _ = io.Copy(client, server); closeWrite(client); done <- struct{}{} }()
	<-done
	<-done
	f.mu.Lock()
	delete(f.conns, client)
	delete(f.conns, server)
	f.mu.Unlock()
}

// closeWrite passes a half-close on, so a peer that finished sending still
// receives the rest of the answer.
func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}

func (f *forwarder) close() {
	f.mu.Lock()
	f.closed = true
	for c := range f.conns {
		_ = c.Close()
	}
	f.mu.Unlock()
	_ = f.ln.Close()
	f.wg.Wait()
}
