package l7proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fastpath-net/fastpath/internal/l7"
)

// Connection states, for Shutdown: only an idle connection (waiting for
// the first byte of its next request) is closed under a client's feet. A
// new one (accepted, first request not begun) is left to send it, as
// net/http's Shutdown does: its client just connected and would see the
// connection close without an answer, e.g. when the listener was handed
// to the next agent right after the accept (docs/l7.md).
const (
	stateIdle int32 = iota
	stateActive
	stateClosed
	stateNew
)

// maxDrain is how much of a denied request's body the proxy reads and
// discards to keep the connection; a longer body closes it instead.
const maxDrain = 64 << 10

// A closing connection that may have unread request bytes is read and
// discarded for at most this long and this much before its socket closes.
const (
	lingerTimeout = 500 * time.Millisecond
	lingerMax     = 1 << 20
)

// conn is one client connection and, once a request was allowed, its one
// upstream connection to the original destination: requests on a client
// connection go, in order, on its upstream connection, so pipelining and
// keep-alive need no pool.
type conn struct {
	p     *Proxy
	c     net.Conn
	flow  Flow
	state atomic.Int32
	in    clientReader
	// linger: the proxy closes while the client may still be sending.
	linger bool
	br     *bufio.Reader // reads in; nil while idle with nothing buffered: idle connections hold no buffers
	up     *upstream
	// The client socket's read deadline as last set by setReadDeadline,
	// and whether it is the idle one.
	rdl     time.Time
	rdlIdle bool
}

// idleSlack is how much earlier than IdleTimeout an idle connection may
// close: the idle deadline is moved at most once per idleSlack, not once
// per request (each move is a timer update on the request's path).
const idleSlack = time.Second

// setReadDeadline sets the client socket's read deadline unless it is
// already t.
func (c *conn) setReadDeadline(t time.Time) {
	c.rdlIdle = false
	if t.Equal(c.rdl) {
		return
	}
	c.rdl = t
	c.c.SetReadDeadline(t)
}

// headComplete reports whether b holds a whole request head, after the
// empty lines readHead skips.
func headComplete(b []byte) bool {
	for range 4 {
		if len(b) < 2 || b[0] != '\r' || b[1] != '\n' {
			break
		}
		b = b[2:]
	}
	return headEnd(b, 0) > 0
}

func (c *conn) serve() {
	defer c.p.untrack(c)
	defer c.close()
	defer c.p.recoverConn(c.c)
	for first := true; ; first = false {
		if !c.awaitRequest(first) {
			return
		}
		if first {
			if h2, err := c.sniffH2(); err != nil {
				return
			} else if h2 {
				c.serveH2()
				return
			}
		}
		if !c.serveOne() || c.p.closing.Load() {
			return
		}
	}
}

// close ends the connection. When the client may still be sending (the
// proxy answered and closes before reading the whole request), it first
// shuts down the write side and reads for a moment: closing a socket with
// unread data sends a reset, which can destroy the answer in flight.
func (c *conn) close() {
	if c.linger {
		if cw, ok := c.c.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			c.c.SetReadDeadline(time.Now().Add(lingerTimeout))
			io.CopyN(io.Discard, c.c, lingerMax)
		}
	}
	c.c.Close()
	if c.in.buf != nil {
		copyBufPool.Put(c.in.buf)
		c.in.buf, c.in.pending = nil, nil
	}
	c.dropUpstream()
	if c.br != nil {
		c.p.putReader(c.br)
		c.br = nil
	}
}

// awaitRequest waits for the next request's first bytes without holding a
// buffer, then marks the connection active.
func (c *conn) awaitRequest(first bool) bool {
	st := stateIdle
	if first {
		st = stateNew
	} else if c.p.closing.Load() {
		return false
	}
	c.state.Store(st)
	if idle := time.Now().Add(c.p.cfg.IdleTimeout); !c.rdlIdle || idle.Sub(c.rdl) > idleSlack {
		c.setReadDeadline(idle)
		c.rdlIdle = true
	}
	fresh := c.br == nil || c.br.Buffered() == 0 && len(c.in.pending) == 0
	if c.br != nil && c.br.Buffered() == 0 && len(c.in.pending) == 0 {
		c.p.putReader(c.br)
		c.br = nil
	}
	if c.br == nil {
		if err := c.in.wait(c.p); err != nil {
			return false
		}
	}
	if !c.state.CompareAndSwap(st, stateActive) {
		return false // Shutdown took it
	}
	if c.br == nil {
		c.br = c.p.getReader(&c.in)
	}
	// HeaderTimeout bounds a head still to be read; one that came whole
	// in the read that ended the wait (the common case) needs no timer.
	if !fresh || !headComplete(c.in.pending) {
		c.setReadDeadline(time.Now().Add(c.p.cfg.HeaderTimeout))
	}
	return true
}

// clientReader is what the connection's bufio.Reader reads: first the
// bytes that wait() read, then the socket.
type clientReader struct {
	c       net.Conn
	pending []byte
	buf     *[]byte // pooled backing of pending

	// For wait: the socket's RawConn and the callback, made once per
	// connection so that waiting allocates nothing.
	raw    syscall.RawConn
	ready  func(fd uintptr) bool
	max    int
	n      int
	rerr   error
	noPoll bool // not a socket: read through the bufio.Reader instead
}

func (r *clientReader) Read(p []byte) (int, error) {
	if len(r.pending) > 0 {
		n := copy(p, r.pending)
		r.pending = r.pending[n:]
		if len(r.pending) == 0 {
			copyBufPool.Put(r.buf)
			r.buf, r.pending = nil, nil
		}
		return n, nil
	}
	return r.c.Read(p)
}

// wait blocks, through the runtime's poller, until the socket is readable
// and reads what is there into a pooled buffer: an idle connection holds
// no buffer, and the wake-up costs no extra system call.
func (r *clientReader) wait(p *Proxy) error {
	if r.raw == nil && !r.noPoll {
		sc, ok := r.c.(syscall.Conn)
		if !ok {
			r.noPoll = true
			return nil
		}
		raw, err := sc.SyscallConn()
		if err != nil {
			return err
		}
		r.raw, r.ready, r.max = raw, r.readReady, p.cfg.MaxHeaderBytes
	}
	if r.noPoll {
		return nil
	}
	r.n, r.rerr = 0, nil
	err := r.raw.Read(r.ready)
	if err == nil {
		err = r.rerr
	}
	if err == nil && r.n <= 0 {
		err = io.EOF
	}
	if err != nil {
		if r.buf != nil {
			copyBufPool.Put(r.buf)
			r.buf = nil
		}
		return err
	}
	r.pending = (*r.buf)[:r.n]
	return nil
}

// readReady is the RawConn callback: it takes a buffer only for the read
// itself, not for the wait.
func (r *clientReader) readReady(fd uintptr) bool {
	r.buf = copyBufPool.Get().(*[]byte)
	r.n, r.rerr = unix.Read(int(fd), (*r.buf)[:min(r.max, len(*r.buf))])
	if r.rerr == unix.EAGAIN || r.rerr == unix.EINTR {
		copyBufPool.Put(r.buf)
		r.buf = nil
		return false
	}
	return true
}

var h2Preface = []byte(http2Preface)

// sniffH2 reports whether the connection starts with the HTTP/2 client
// preface (h2c with prior knowledge), reading no more than needed.
func (c *conn) sniffH2() (bool, error) {
	for {
		n := c.br.Buffered()
		b, _ := c.br.Peek(n)
		m := min(len(b), len(h2Preface))
		if !bytes.Equal(b[:m], h2Preface[:m]) {
			return false, nil
		}
		if m == len(h2Preface) {
			return true, nil
		}
		if _, err := c.br.Peek(n + 1); err != nil {
			return false, err
		}
	}
}

// readHead reads one request head, validated by checkRequestHead before
// net/http parses it. A nil request and nil headError mean the client
// went away (or timed out) between requests: close without a reply.
func (c *conn) readHead() (*http.Request, *headError) {
	br := c.br
	// RFC 9112 2.2: ignore empty lines before a request line (some clients
	// send CRLF after a body); a few, not an endless stream of them.
	for range 4 {
		b, err := br.Peek(2)
		if err != nil || b[0] != '\r' || b[1] != '\n' {
			break
		}
		br.Discard(2)
	}
	scanned := 0
	for {
		b, _ := br.Peek(br.Buffered())
		if end := headEnd(b, scanned); end > 0 {
			if herr := checkRequestHead(b[:end]); herr != nil {
				return nil, herr
			}
			break
		}
		scanned = max(0, len(b)-3)
		if len(b) >= br.Size() {
			return nil, refuse(431, "request head larger than the limit")
		}
		if _, err := br.Peek(len(b) + 1); err != nil {
			if len(b) == 0 || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return nil, refuse(408, "request head timed out")
			}
			return nil, nil
		}
	}
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, refuse(400, "malformed request: "+err.Error())
	}
	// The read deadline (idle or head) stays: nothing more is read from
	// the client for this request unless it has a body (forward and
	// drain set what they need) or becomes a tunnel; the next
	// awaitRequest sets it again.
	return req, nil
}

// headEnd returns the length of the head in b (through the empty line),
// or 0 if b holds no complete head. A bare LF empty line also ends it, so
// that checkRequestHead refuses it at once instead of waiting for more.
func headEnd(b []byte, from int) int {
	for i := from; i < len(b); i++ {
		if b[i] != '\n' {
			continue
		}
		if i+1 < len(b) && b[i+1] == '\n' {
			return i + 2
		}
		if i+2 < len(b) && b[i+1] == '\r' && b[i+2] == '\n' {
			return i + 3
		}
	}
	return 0
}

// serveOne handles one request; it reports whether the connection stays
// open for the next.
func (c *conn) serveOne() bool {
	start := time.Now()
	req, herr := c.readHead()
	if req == nil {
		if herr != nil {
			c.reply(herr.status, http.StatusText(herr.status)+": "+herr.reason+"\n", true)
			c.p.emit(Event{Time: start, Flow: c.flow, Verdict: l7.Verdict{Reason: herr.reason}, Status: herr.status, Proto: ProtoHTTP1})
		}
		return false
	}
	path, ok := normalizePath(pathOf(req.RequestURI))
	if !ok {
		const reason = "path with a dot-segment, an encoded slash or backslash, or a broken percent-encoding"
		c.reply(http.StatusBadRequest, "Bad Request: "+reason+"\n", true)
		c.p.emit(Event{Time: start, Flow: c.flow, Method: req.Method, Host: req.Host, Path: pathOf(req.RequestURI),
			Verdict: l7.Verdict{Reason: reason}, Status: http.StatusBadRequest, Proto: ProtoHTTP1})
		return false
	}
	if raw := pathOf(req.RequestURI); path != raw {
		req.RequestURI = path + req.RequestURI[len(raw):] // the server gets what was judged
	}
	lreq := l7.Request{Method: req.Method, Path: path, Host: req.Host, Header: req.Header}
	var buf [4]judgement
	js, allowed := judge(c.p.cfg.Policy.Lookup(c.flow), &lreq, buf[:0])
	var status int
	keep := false
	switch {
	case !allowed:
		status = http.StatusForbidden
		// Without a 100 Continue the client may or may not send its body:
		// only a connection whose body was read to its end is reusable.
		keep = !req.Close && !c.p.closing.Load() && !expectsContinue(req) && c.drain(req.Body)
		c.reply(status, "Access denied", !keep)
	case !c.handleExpect(req):
		status = http.StatusExpectationFailed
		c.reply(status, "Expectation Failed\n", true)
	default:
		status, keep = c.forward(req)
		keep = keep && !req.Close
	}
	c.p.emitAll(start, c.flow, &lreq, js, status, ProtoHTTP1)
	return keep
}

func expectsContinue(req *http.Request) bool {
	return req.Header["Expect"] != nil
}

// handleExpect answers Expect: 100-continue itself once the request is
// allowed (the upstream never sees Expect): the body is then streamed as
// for any request. Other expectations fail (RFC 9110 10.1.1).
func (c *conn) handleExpect(req *http.Request) bool {
	exp := req.Header["Expect"]
	if exp == nil {
		return true
	}
	delete(req.Header, "Expect")
	if len(exp) != 1 || !strings.EqualFold(exp[0], "100-continue") {
		return false
	}
	if req.ProtoAtLeast(1, 1) && req.ContentLength != 0 {
		bw := c.p.getWriter(c.c)
		bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
		err := bw.Flush()
		c.p.putWriter(bw)
		return err == nil
	}
	return true
}

// drain reads and discards a denied request's body, within HeaderTimeout,
// and reports whether it ended (the connection is then still in step).
func (c *conn) drain(body io.ReadCloser) bool {
	if body == nil || body == http.NoBody {
		return true
	}
	c.setReadDeadline(time.Now().Add(c.p.cfg.HeaderTimeout))
	defer c.setReadDeadline(time.Time{})
	_, err := io.CopyN(io.Discard, body, maxDrain+1)
	return errors.Is(err, io.EOF)
}

// reply sends a short response of the proxy's own.
func (c *conn) reply(status int, body string, closeConn bool) {
	c.linger = c.linger || closeConn
	bw := c.p.getWriter(c.c)
	defer c.p.putWriter(bw)
	bw.WriteString("HTTP/1.1 ")
	bw.WriteString(strconv.Itoa(status))
	bw.WriteByte(' ')
	bw.WriteString(http.StatusText(status))
	bw.WriteString("\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ")
	bw.WriteString(strconv.Itoa(len(body)))
	if closeConn {
		bw.WriteString("\r\nConnection: close")
	}
	bw.WriteString("\r\n\r\n")
	bw.WriteString(body)
	bw.Flush()
}

// forward sends an allowed request upstream and streams the response back.
// It returns the status the client got and whether both connections are
// still in step for another request.
func (c *conn) forward(req *http.Request) (int, bool) {
	hasBody := req.ContentLength != 0
	for attempt := 0; ; attempt++ {
		reused := c.up != nil
		if c.up == nil {
			up, err := c.p.dialUpstream(c.flow)
			if err != nil {
				c.reply(http.StatusBadGateway, "Bad Gateway\n", hasBody)
				return http.StatusBadGateway, !hasBody
			}
			c.up = up
		}
		up := c.up
		up.acquire(c.p)
		host := req.Host
		if host == "" {
			host = c.flow.Dst.String()
		}
		ws := isWebSocket(req)
		writeRequestHead(up.bw, req, host, ws)
		var body *bodySender
		if hasBody {
			c.setReadDeadline(time.Time{}) // the body streams for as long as it takes
			body = c.sendBody(up, req)
		} else if err := up.bw.Flush(); err != nil {
			c.dropUpstream()
			if reused && attempt == 0 {
				continue // the upstream closed the idle connection: redial once
			}
			c.reply(http.StatusBadGateway, "Bad Gateway\n", false)
			return http.StatusBadGateway, true
		}
		resp, err := up.readResponse(c, req, ws)
		if err != nil {
			var bodyErr error
			if body != nil {
				bodyErr = body.stop(c, up)
			}
			c.dropUpstream()
			var rerr *bodyReadError
			if errors.As(bodyErr, &rerr) {
				// The client's body was malformed (e.g. a bad chunk size):
				// the upstream got a truncated request, the client a 400.
				c.reply(http.StatusBadRequest, "Bad Request: "+rerr.Error()+"\n", true)
				return http.StatusBadRequest, false
			}
			if reused && attempt == 0 && !hasBody && retryable(err) {
				continue
			}
			c.reply(http.StatusBadGateway, "Bad Gateway\n", hasBody)
			return http.StatusBadGateway, !hasBody
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			return c.tunnel(resp, up), false
		}
		keep, err := c.writeResponse(req, resp)
		resp.Body.Close()
		if body != nil && !body.wait() {
			// The upstream answered before reading the whole request
			// body: the rest of it cannot be framed any more.
			body.stop(c, up)
			keep = false
			c.linger = true
		} else if body != nil && body.err != nil {
			keep = false
		}
		switch {
		case err != nil || !keep:
			c.dropUpstream()
			keep = false
		case resp.Close:
			c.dropUpstream() // the next request dials again
		default:
			c.up.release(c.p)
		}
		return resp.StatusCode, keep
	}
}

// bodySender streams a request body upstream on its own goroutine, so that
// the response is read while the body is still being sent (an upstream may
// answer early, or echo as it reads).
type bodySender struct {
	done    chan error // the copy's own failure, or nil
	stopped atomic.Bool
	err     error // what done said, once wait returned true
}

// bodyGrace is how long a finished response waits for its request body's
// copy to end. The copy of a body the upstream read to its end ends at
// once (it may just not have been scheduled yet); one still running after
// this is a body the upstream answered without reading.
const bodyGrace = 200 * time.Millisecond

// wait reports whether the copy ended within bodyGrace.
func (b *bodySender) wait() bool {
	select {
	case b.err = <-b.done:
		return true
	default:
	}
	t := time.NewTimer(bodyGrace)
	defer t.Stop()
	select {
	case b.err = <-b.done:
		return true
	case <-t.C:
		return false
	}
}

func (c *conn) sendBody(up *upstream, req *http.Request) *bodySender {
	b := &bodySender{done: make(chan error, 1)}
	go func() {
		err := errors.New("l7proxy: request body copy panicked")
		defer func() { b.done <- err }() // last: the waiter always hears
		defer c.p.recoverConn(c.c)
		err = copyBody(up.bw, req.Body, req.ContentLength < 0, req.Trailer)
		if err != nil && !b.stopped.Load() {
			up.c.Close() // wakes readResponse: this request cannot complete
			return
		}
		err = nil
	}()
	return b
}

// stop ends the copy (it fails on both ends at once) and waits for it, so
// that nothing touches the upstream's buffers after; it returns the copy's
// own error if it had failed before.
func (b *bodySender) stop(c *conn, up *upstream) error {
	select {
	case err := <-b.done:
		return err
	default:
	}
	b.stopped.Store(true)
	up.c.Close()
	c.setReadDeadline(aLongTimeAgo)
	err := <-b.done
	c.setReadDeadline(time.Time{})
	return err
}

// isWebSocket reports a WebSocket opening handshake (RFC 6455 4.1): the
// only protocol switch the proxy follows. It is judged like any request;
// after the 101 the connection carries WebSocket frames, not requests.
func isWebSocket(req *http.Request) bool {
	up := req.Header["Upgrade"]
	return req.Method == http.MethodGet && req.ProtoAtLeast(1, 1) && req.ContentLength == 0 &&
		len(up) == 1 && strings.EqualFold(up[0], "websocket") && listed(req.Header["Connection"], "Upgrade")
}

// tunnel answers the client with the upstream's 101 and then copies bytes
// both ways until each side has closed its direction.
func (c *conn) tunnel(resp *http.Response, up *upstream) int {
	if err := c.writeBodilessHead(resp, "Connection: Upgrade\r\nUpgrade: websocket\r\n"); err != nil {
		return resp.StatusCode
	}
	c.setReadDeadline(time.Time{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer c.p.recoverConn(c.c)
		io.Copy(up.c, c.br) // what the client sent after the handshake first
		closeWrite(up.c)
	}()
	io.Copy(c.c, up.br)
	closeWrite(c.c)
	<-done
	return resp.StatusCode
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

// retryable: the upstream closed a kept-alive connection before answering.
func retryable(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func (c *conn) dropUpstream() {
	if c.up != nil {
		c.up.c.Close()
		c.up.release(c.p)
		c.up = nil
	}
}

// writeResponse streams resp to the client. The framing is the proxy's
// own: Content-Length when known, else chunked for HTTP/1.1 clients (so
// the connection survives), else close-delimited.
func (c *conn) writeResponse(req *http.Request, resp *http.Response) (keep bool, err error) {
	bw := c.p.getWriter(c.c)
	defer c.p.putWriter(bw)
	noBody := req.Method == http.MethodHead || resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusNotModified
	closeAfter := req.Close || c.p.closing.Load()
	chunked := false
	writeStatusLine(bw, resp)
	writeHeaders(bw, resp.Header, responseHopByHop)
	switch {
	case noBody:
		for _, v := range resp.Header["Content-Length"] {
			writeField(bw, "Content-Length", v)
		}
	case resp.ContentLength >= 0:
		writeField(bw, "Content-Length", strconv.FormatInt(resp.ContentLength, 10))
	case req.ProtoAtLeast(1, 1):
		writeField(bw, "Transfer-Encoding", "chunked")
		chunked = true
	default:
		closeAfter = true
	}
	if closeAfter {
		writeField(bw, "Connection", "close")
	} else if !req.ProtoAtLeast(1, 1) {
		writeField(bw, "Connection", "keep-alive")
	}
	bw.WriteString("\r\n")
	if noBody {
		return !closeAfter, bw.Flush()
	}
	if err := copyBody(bw, resp.Body, chunked, resp.Trailer); err != nil {
		return false, err
	}
	return !closeAfter, nil
}

// writeBodilessHead sends a 1xx response head (end-to-end fields, then
// extra fields as raw lines) to the client at once.
func (c *conn) writeBodilessHead(resp *http.Response, extra string) error {
	bw := c.p.getWriter(c.c)
	defer c.p.putWriter(bw)
	writeStatusLine(bw, resp)
	writeHeaders(bw, resp.Header, responseHopByHop)
	bw.WriteString(extra)
	bw.WriteString("\r\n")
	return bw.Flush()
}

func writeStatusLine(bw *bufio.Writer, resp *http.Response) {
	bw.WriteString("HTTP/1.1 ")
	bw.WriteString(resp.Status)
	if strings.IndexByte(resp.Status, ' ') < 0 {
		bw.WriteByte(' ')
	}
	bw.WriteString("\r\n")
}

// Hop-by-hop fields (RFC 9110 7.6.1) and the framing fields the proxy
// writes itself. Upgrade is dropped except for a WebSocket handshake
// (isWebSocket), which writeRequestHead re-adds: an Upgrade: h2c request is
// answered in HTTP/1.1, as RFC 9113 3.2 allows, so every HTTP/2 stream
// still passes the rules.
var (
	requestHopByHop = map[string]bool{
		"Host": true, "Connection": true, "Keep-Alive": true, "Proxy-Connection": true,
		"Transfer-Encoding": true, "Content-Length": true, "Te": true, "Trailer": true,
		"Upgrade": true, "Http2-Settings": true, "Expect": true,
	}
	responseHopByHop = map[string]bool{
		"Connection": true, "Keep-Alive": true, "Proxy-Connection": true,
		"Transfer-Encoding": true, "Content-Length": true, "Trailer": true, "Upgrade": true,
	}
)

// writeRequestHead writes req's head as HTTP/1.1; host is the Host field
// (for an HTTP/1.0 request without one, the original destination); a
// WebSocket handshake keeps its Upgrade.
func writeRequestHead(bw *bufio.Writer, req *http.Request, host string, websocket bool) {
	bw.WriteString(req.Method)
	bw.WriteByte(' ')
	bw.WriteString(req.RequestURI)
	bw.WriteString(" HTTP/1.1\r\n")
	writeField(bw, "Host", host)
	writeHeaders(bw, req.Header, requestHopByHop)
	if websocket {
		bw.WriteString("Connection: Upgrade\r\nUpgrade: websocket\r\n")
	}
	switch {
	case req.ContentLength > 0:
		writeField(bw, "Content-Length", strconv.FormatInt(req.ContentLength, 10))
	case req.ContentLength < 0:
		writeField(bw, "Transfer-Encoding", "chunked")
	case req.Header["Content-Length"] != nil:
		writeField(bw, "Content-Length", "0")
	}
	bw.WriteString("\r\n")
}

func writeHeaders(bw *bufio.Writer, h http.Header, skip map[string]bool) {
	connTokens := h["Connection"]
	for k, vs := range h {
		if skip[k] || listed(connTokens, k) {
			continue
		}
		for _, v := range vs {
			writeField(bw, k, v)
		}
	}
}

// listed reports whether name is one of the Connection field's tokens.
func listed(connection []string, name string) bool {
	for _, v := range connection {
		for tok := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), name) {
				return true
			}
		}
	}
	return false
}

func writeField(bw *bufio.Writer, k, v string) {
	bw.WriteString(k)
	bw.WriteString(": ")
	bw.WriteString(v)
	bw.WriteString("\r\n")
}

// copyBody streams a body, re-chunking it when chunked, and flushes after
// every read so that streamed bodies (long polls, events) are not held
// back; memory is one 32 KiB buffer whatever the body's size.
func copyBody(bw *bufio.Writer, src io.Reader, chunked bool, trailer http.Header) error {
	bufp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bufp)
	buf := *bufp
	for {
		n, err := src.Read(buf)
		if err != nil && !errors.Is(err, io.EOF) {
			return &bodyReadError{err}
		}
		if n > 0 {
			if chunked {
				bw.WriteString(strconv.FormatInt(int64(n), 16))
				bw.WriteString("\r\n")
			}
			bw.Write(buf[:n])
			if chunked {
				bw.WriteString("\r\n")
			}
			if ferr := bw.Flush(); ferr != nil {
				return ferr
			}
		}
		if err != nil {
			break
		}
	}
	if chunked {
		bw.WriteString("0\r\n")
		for k, vs := range trailer {
			for _, v := range vs {
				writeField(bw, k, v)
			}
		}
		bw.WriteString("\r\n")
	}
	return bw.Flush()
}

// bodyReadError is a body that could not be read from its sender (bad
// chunk framing, early EOF), as opposed to a failure to write it on.
type bodyReadError struct{ err error }

func (e *bodyReadError) Error() string { return "reading body: " + e.err.Error() }
func (e *bodyReadError) Unwrap() error { return e.err }

// upstream is the connection to the original destination. Its buffers are
// taken for a request and returned after it, so idle pairs hold none.
type upstream struct {
	c   net.Conn
	lim headLimit
	br  *bufio.Reader
	bw  *bufio.Writer
}

// headLimit bounds what a response head may read: net/http's parser has
// no limit of its own.
type headLimit struct {
	r io.Reader
	n int64
}

var errHeadTooLarge = errors.New("response head larger than the limit")

func (l *headLimit) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errHeadTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

func (p *Proxy) dialUpstream(f Flow) (*upstream, error) {
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	c, err := p.cfg.Dial(ctx, f)
	if err != nil {
		return nil, err
	}
	up := &upstream{c: c}
	up.lim = headLimit{r: c, n: math.MaxInt64}
	return up, nil
}

func (u *upstream) acquire(p *Proxy) {
	if u.br == nil {
		u.br = p.getReader(&u.lim)
	}
	if u.bw == nil {
		u.bw = p.getWriter(u.c)
	}
}

func (u *upstream) release(p *Proxy) {
	if u.bw != nil {
		p.putWriter(u.bw)
		u.bw = nil
	}
	if u.br != nil && u.br.Buffered() == 0 {
		p.putReader(u.br)
		u.br = nil
	}
}

// readResponse reads the final response head, passing 1xx interim
// responses (other than 100, which the proxy answered itself) to HTTP/1.1
// clients. 101 is final for a WebSocket handshake that the upstream
// accepted as one, an error otherwise.
func (u *upstream) readResponse(c *conn, req *http.Request, websocket bool) (*http.Response, error) {
	for {
		u.lim.n = 4 * int64(c.p.cfg.MaxHeaderBytes)
		resp, err := http.ReadResponse(u.br, req)
		u.lim.n = math.MaxInt64
		if err != nil {
			return nil, err
		}
		switch {
		case resp.StatusCode == http.StatusSwitchingProtocols:
			if websocket && len(resp.Header["Upgrade"]) == 1 && strings.EqualFold(resp.Header["Upgrade"][0], "websocket") {
				return resp, nil
			}
			return nil, errors.New("unexpected 101 Switching Protocols")
		case resp.StatusCode >= 200:
			return resp, nil
		case resp.StatusCode != http.StatusContinue && req.ProtoAtLeast(1, 1):
			if err := c.writeBodilessHead(resp, ""); err != nil {
				return nil, err
			}
		}
	}
}
