package l7proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/fastpath-net/fastpath/internal/l7"
)

// http2Preface starts every HTTP/2 connection (RFC 9113 3.4).
const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// h2state is the proxy's HTTP/2 side: net/http's own HTTP/2 server and
// client (Go 1.24+ speak h2c with prior knowledge through Protocols),
// with a handler per stream, so each stream is judged on its own.
type h2state struct {
	once sync.Once
	srv  *http.Server
	ln   *chanListener
	tr   *http.Transport
}

type h2ConnKey struct{}
type flowKey struct{}

func (p *Proxy) startH2() {
	p.h2.once.Do(func() {
		var protos http.Protocols
		protos.SetUnencryptedHTTP2(true)
		p.h2.ln = &chanListener{conns: make(chan net.Conn), done: make(chan struct{})}
		p.h2.srv = &http.Server{
			Handler:        http.HandlerFunc(p.serveStream),
			Protocols:      &protos,
			IdleTimeout:    p.cfg.IdleTimeout,
			MaxHeaderBytes: p.cfg.MaxHeaderBytes,
			ConnContext: func(ctx context.Context, c net.Conn) context.Context {
				return context.WithValue(ctx, h2ConnKey{}, c.(*h2conn))
			},
			ErrorLog: discardLog,
		}
		p.h2.tr = &http.Transport{
			Protocols:              &protos,
			MaxResponseHeaderBytes: 4 * int64(p.cfg.MaxHeaderBytes), // as for HTTP/1.1
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return p.cfg.Dial(ctx, ctx.Value(flowKey{}).(Flow))
			},
		}
		go p.h2.srv.Serve(p.h2.ln)
	})
}

// shutdownH2 sends GOAWAY on every HTTP/2 connection and waits for their
// streams, as net/http's graceful shutdown does.
func (p *Proxy) shutdownH2(ctx context.Context) error {
	var err error
	p.h2.once.Do(func() {}) // no HTTP/2 server after this
	if p.h2.srv != nil {
		err = p.h2.srv.Shutdown(ctx)
	}
	return err
}

// serveH2 hands the connection (its preface still buffered) to the HTTP/2
// server and waits for that to close it.
func (c *conn) serveH2() {
	c.c.SetReadDeadline(time.Time{})
	c.p.startH2()
	hc := &h2conn{Conn: c.c, r: c.br, c: c, closed: make(chan struct{})}
	select {
	case c.p.h2.ln.conns <- hc:
		<-hc.closed
		hc.waitStreams() // handlers outlive the connection's close
	case <-c.p.h2.ln.done:
	}
	hc.closeUpstream()
	// The HTTP/2 server's read loop may still hold the reader after it
	// closed the connection: leave it, and its buffer, to the garbage
	// collector rather than to the pools (where another connection would
	// get it while that loop still reads).
	c.br = nil
	c.in.buf, c.in.pending = nil, nil
}

// h2conn is the client connection as the HTTP/2 server sees it: reads
// start with the bytes already buffered.
type h2conn struct {
	net.Conn
	r      io.Reader
	c      *conn
	once   sync.Once
	closed chan struct{}

	mu sync.Mutex
	up *http.ClientConn

	smu     sync.Mutex
	streams int
	drained chan struct{} // closed when streams falls to 0, if waited for
}

func (h *h2conn) streamStart() {
	h.smu.Lock()
	h.streams++
	h.smu.Unlock()
}

func (h *h2conn) streamEnd() {
	h.smu.Lock()
	h.streams--
	if h.streams == 0 && h.drained != nil {
		close(h.drained)
		h.drained = nil
	}
	h.smu.Unlock()
}

func (h *h2conn) waitStreams() {
	h.smu.Lock()
	if h.streams == 0 {
		h.smu.Unlock()
		return
	}
	ch := make(chan struct{})
	h.drained = ch
	h.smu.Unlock()
	<-ch
}

func (h *h2conn) Read(b []byte) (int, error) { return h.r.Read(b) }

func (h *h2conn) Close() error {
	err := h.Conn.Close()
	h.once.Do(func() { close(h.closed) })
	return err
}

// upstream returns the connection's HTTP/2 connection to the original
// destination, dialling it on first use or after it failed.
func (h *h2conn) upstream(ctx context.Context) (*http.ClientConn, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.up != nil && h.up.Err() == nil {
		return h.up, nil
	}
	if h.up != nil {
		h.up.Close()
		h.up = nil
	}
	ctx, cancel := context.WithTimeout(context.WithValue(ctx, flowKey{}, h.c.flow), dialTimeout)
	defer cancel()
	up, err := h.c.p.h2.tr.NewClientConn(ctx, "http", h.c.flow.Dst.String())
	if err != nil {
		return nil, err
	}
	h.up = up
	return up, nil
}

func (h *h2conn) closeUpstream() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.up != nil {
		h.up.Close()
		h.up = nil
	}
}

// serveStream judges and forwards one HTTP/2 stream. A denied stream gets
// 403 "Access denied" on that stream only; the connection and its other
// streams go on.
func (p *Proxy) serveStream(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	hc := r.Context().Value(h2ConnKey{}).(*h2conn)
	hc.streamStart()
	defer hc.streamEnd()
	path, ok := normalizePath(pathOf(r.RequestURI))
	if !ok {
		http.Error(w, "Bad Request: invalid :path", http.StatusBadRequest)
		p.emit(Event{Time: start, Flow: hc.c.flow, Method: r.Method, Host: r.Host, Path: pathOf(r.RequestURI),
			Verdict: l7.Verdict{Reason: "invalid :path"}, Status: http.StatusBadRequest, Proto: ProtoH2C})
		return
	}
	lreq := l7.Request{Method: r.Method, Path: path, Host: r.Host, Header: r.Header}
	var buf [4]judgement
	js, allowed := judge(p.cfg.Policy.Lookup(hc.c.flow), &lreq, buf[:0])
	status := http.StatusForbidden
	// Deferred: a stream whose copy fails is aborted by a panic, and is
	// still reported.
	defer func() { p.emitAll(start, hc.c.flow, &lreq, js, status, ProtoH2C) }()
	if allowed {
		p.forwardStream(w, r, hc, lreq.Path, &status)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	io.WriteString(w, "Access denied")
}

// forwardStream sends an allowed stream upstream and copies the answer;
// *status is the status the client got.
func (p *Proxy) forwardStream(w http.ResponseWriter, r *http.Request, hc *h2conn, path string, status *int) {
	up, err := hc.upstream(r.Context())
	if err != nil {
		*status = http.StatusBadGateway
		http.Error(w, "Bad Gateway", *status)
		return
	}
	u := *r.URL
	u.Scheme, u.Host = "http", r.Host
	u.Opaque = path // the server gets the path that was judged
	out := &http.Request{
		Method: r.Method, URL: &u, Host: r.Host,
		Proto: "HTTP/2.0", ProtoMajor: 2,
		Header: r.Header, Trailer: r.Trailer,
		Body: r.Body, ContentLength: r.ContentLength,
	}
	out = out.WithContext(r.Context())
	if r.ContentLength == 0 {
		out.Body = nil
	}
	resp, err := up.RoundTrip(out)
	if err != nil {
		*status = http.StatusBadGateway
		http.Error(w, "Bad Gateway", *status)
		return
	}
	defer resp.Body.Close()
	h := w.Header()
	for k, vs := range resp.Header {
		h[k] = vs
	}
	*status = resp.StatusCode
	w.WriteHeader(resp.StatusCode)
	if err := copyFlushing(w, resp.Body); err != nil {
		// Headers are out: only a reset of this stream can tell the client.
		panic(http.ErrAbortHandler)
	}
	for k, vs := range resp.Trailer {
		h[http.TrailerPrefix+k] = vs
	}
}

// copyFlushing streams a response body, flushing after each read so that
// streamed responses (gRPC, events) are not held back.
func copyFlushing(w http.ResponseWriter, body io.Reader) error {
	bufp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bufp)
	rc := http.NewResponseController(w)
	for {
		n, err := body.Read(*bufp)
		if n > 0 {
			if _, werr := w.Write((*bufp)[:n]); werr != nil {
				return werr
			}
			rc.Flush()
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// chanListener hands connections the proxy accepted (and sniffed) to the
// HTTP/2 server.
type chanListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return &net.TCPAddr{} }
