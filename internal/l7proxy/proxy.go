// Package l7proxy is the transparent HTTP proxy of L7 policy. The datapath
// redirects flows whose policy entry carries HTTP rules to a listener that
// the agent hands to Serve; the proxy reads each request, asks the Policy
// for the rule sets that apply to the flow (per request, so rule updates
// reach existing connections), forwards allowed requests to the original
// destination through Config.Dial, answers denied ones with 403 "Access
// denied", and reports one Event per request and applied rule set.
//
// # Contract with the agent (branch l7dp)
//
//   - Flow.Dst is the original destination. With bpf_sk_assign or TPROXY
//     the accepted connection's LocalAddr is that address, so Serve takes
//     Flow{Src: RemoteAddr, Dst: LocalAddr} (IPv4-mapped addresses unmapped).
//   - Policy.Lookup is called once per request (per stream in HTTP/2) and
//     returns every rule set that applies (the client's egress and the
//     server's ingress when both ends are L7-protected); all must allow, in
//     order, and the first denial decides. An empty result denies
//     (ReasonNoPolicy): the proxy never forwards a request that was not
//     matched against rules. A flow that policy now allows at L4 only gets an
//     Applied with an allow-all rule set (one empty HTTPRule).
//   - Dial opens the upstream leg; the agent's Dialer marks the socket so
//     the datapath does not redirect it again. Tests dial a fixed upstream.
//   - Config.Events is called synchronously on the request's goroutine, after
//     the response, and must not block. A request refused before the rules
//     (malformed, smuggling) gives one event with an empty Endpoint.
//   - Shutdown stops accepting, closes idle connections, lets in-flight
//     requests finish (their response says Connection: close) and sends
//     GOAWAY on HTTP/2. It stops a TCP listener with a deadline instead of
//     closing it, so the same socket can go to the next proxy's Serve (in
//     process, or passed to a new agent process): connections that arrive
//     meanwhile wait in its backlog instead of failing
//     (TestListenerHandOver). The agent closes the listener itself.
//
// # Why net/http's parsers under a connection loop of our own
//
// HTTP/1.1 uses http.ReadRequest and http.ReadResponse (well-fuzzed,
// maintained parsers, chunked decoding with strict chunk-size checks), but
// not net/http's Server or Transport: the proxy owns the connection loop
// and writes every byte of framing itself. That is what the issue needs:
//
//   - Smuggling is decided before parsing. checkRequestHead validates the
//     raw head, stricter than net/http, which accepts Content-Length beside
//     Transfer-Encoding (it drops CL), obs-fold and more. Refused (400 and
//     close): CL with TE, differing or comma-listed CL, a TE other than one
//     "chunked" (501), TE on HTTP/1.0, obs-fold, whitespace before a colon,
//     bare LF and bare CR (strict: every line must end in CRLF), control
//     characters in values, missing or repeated Host, absolute-form and
//     CONNECT targets. A bad chunk size is found while streaming: the client
//     gets 400, both connections close, nothing after it is read as a
//     request.
//   - The path the rules judge is the path the server gets: normalizePath
//     decodes percent-encoded unreserved characters ("/adm%69n" is
//     "/admin"), upper-cases other percent-encodings and merges runs of '/',
//     and the request is forwarded with that path (HTTP/1.1 and HTTP/2).
//     Paths a server could still read differently are refused with 400:
//     "."/".." segments (also %2e-encoded), %2F, %5C, raw backslashes and
//     broken percent-encodings.
//   - Framing is re-written, never passed through: Content-Length when known,
//     else chunked (HTTP/1.1 client) or close-delimited (HTTP/1.0);
//     hop-by-hop fields (Connection and what it lists, Keep-Alive, TE,
//     Trailer, Upgrade, HTTP2-Settings, Expect) are dropped. The server thus
//     sees exactly the requests that were judged.
//   - Expect: 100-continue is answered by the proxy once the request is
//     allowed; a denied one gets 403 without 100 Continue and the connection
//     closes (the client may or may not send its body).
//   - Denied requests keep the connection when their body (up to 64 KiB)
//     could be read to its end; otherwise 403 and close.
//   - Each client connection has one upstream connection, dialled at the
//     first allowed request and reused in order: keep-alive and pipelining
//     need no pool, and a request is retried once on a fresh connection only
//     when a kept-alive upstream closed before answering a bodiless request.
//   - Memory is bounded: bodies stream through one pooled 32 KiB buffer,
//     flushed per read (long polls and event streams are not held back);
//     heads are bounded by MaxHeaderBytes (431 for requests; a response head
//     over 4x that is a 502). An idle connection holds no buffer at all: it
//     waits on the runtime poller through RawConn and reads only once data
//     is there.
//
// The only Upgrade followed is WebSocket (RFC 6455): the handshake is
// judged like any GET, and after the upstream's 101 the proxy copies bytes
// both ways. Every other Upgrade is dropped; Upgrade: h2c is answered in
// HTTP/1.1 (RFC 9113 3.2 allows it), so every request stays visible.
//
// # HTTP/2
//
// h2c with prior knowledge (the connection starts with the HTTP/2 preface)
// is served by net/http's own HTTP/2 server (Go 1.24+ Protocols with
// UnencryptedHTTP2; no x/net needed) with one handler per stream: every
// stream is judged on its own, a denied stream gets 403 "Access denied"
// while the connection and its other streams go on. Allowed streams go over
// one h2c connection per client connection to the original destination
// (http.Transport.NewClientConn), with bodies and trailers streamed.
package l7proxy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fastpath-net/fastpath/internal/l7"
)

// Flow is one redirected connection: Src is the client, Dst the original
// destination (the accepted connection's LocalAddr).
type Flow struct {
	Src, Dst netip.AddrPort
}

// Direction says which endpoint's policy a rule set belongs to.
type Direction uint8

const (
	Ingress Direction = iota // the server endpoint's ingress policy
	Egress                   // the client endpoint's egress policy
)

func (d Direction) String() string {
	if d == Egress {
		return "egress"
	}
	return "ingress"
}

// Applied is one rule set that a request must pass.
type Applied struct {
	Direction Direction
	Endpoint  string // e.g. "ns/pod", reported in events
	Rules     *l7.Compiled
}

// Policy finds the rule sets for a flow. It is called once per request and
// must be safe for concurrent use.
type Policy interface {
	Lookup(f Flow) []Applied
}

// Dialer opens the upstream connection for a flow (to f.Dst).
type Dialer func(ctx context.Context, f Flow) (net.Conn, error)

// Protocols reported in Event.Proto.
const (
	ProtoHTTP1 = "HTTP/1.1"
	ProtoH2C   = "h2c"
)

// Event is the access-log record of one request judged by one rule set.
type Event struct {
	Time      time.Time
	Flow      Flow
	Direction Direction
	Endpoint  string
	Method    string
	Host      string
	Path      string
	Verdict   l7.Verdict // Allowed, Rule (the deciding rule), Reason
	Status    int        // status sent to the client: upstream's, 403, 400 or 502
	Proto     string     // ProtoHTTP1 or ProtoH2C
}

// Config configures a Proxy. Every field has a default; without a Policy
// every request is denied.
type Config struct {
	Policy Policy
	// Dial opens upstream connections; default: a plain TCP dial to f.Dst.
	Dial Dialer
	// Events receives access-log events; nil drops them.
	Events func(Event)
	// IdleTimeout closes a client connection idle between requests
	// (default 2 minutes).
	IdleTimeout time.Duration
	// HeaderTimeout bounds reading one request head once its first byte
	// arrived (default 30 s).
	HeaderTimeout time.Duration
	// Logf reports what has no event: a recovered panic (with its stack)
	// that cost one connection instead of the agent. nil drops it.
	Logf func(format string, args ...any)
	// MaxHeaderBytes bounds a request or response head (default 16 KiB);
	// larger heads get 431 (request) or 502 (response).
	MaxHeaderBytes int
}

// Proxy is the L7 proxy. It is safe for concurrent use.
type Proxy struct {
	cfg Config

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	closing   atomic.Bool
	done      chan struct{} // closed by Shutdown
	wg        sync.WaitGroup

	readers sync.Pool // *bufio.Reader of MaxHeaderBytes
	writers sync.Pool // *bufio.Writer of writerSize
	h2      h2state
}

// New returns a proxy for cfg.
func New(cfg Config) *Proxy {
	if cfg.Policy == nil {
		cfg.Policy = noPolicy{} // fail closed
	}
	if cfg.Dial == nil {
		cfg.Dial = dialTCP
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 2 * time.Minute
	}
	if cfg.HeaderTimeout <= 0 {
		cfg.HeaderTimeout = 30 * time.Second
	}
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = 16 << 10
	}
	return &Proxy{
		cfg:       cfg,
		listeners: map[net.Listener]struct{}{},
		conns:     map[*conn]struct{}{},
		done:      make(chan struct{}),
	}
}

type noPolicy struct{}

func (noPolicy) Lookup(Flow) []Applied { return nil }

func dialTCP(ctx context.Context, f Flow) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", f.Dst.String())
}

// deadliner is a listener whose Accept a deadline can stop (*net.TCPListener).
type deadliner interface{ SetDeadline(time.Time) error }

// ErrClosed is returned by Serve after Shutdown.
var ErrClosed = errors.New("l7proxy: proxy closed")

// Serve accepts connections on ln until Shutdown or an accept error; it
// may be called for several listeners. After Shutdown it returns ErrClosed
// and leaves a listener that has SetDeadline (a *net.TCPListener) open:
// the caller closes it or gives it to another Proxy's Serve, which resets
// the deadline. Other listeners, and one that fails, are closed.
func (p *Proxy) Serve(ln net.Listener) error {
	if d, ok := ln.(deadliner); ok {
		d.SetDeadline(time.Time{}) // a listener handed over after a Shutdown
	}
	p.mu.Lock()
	if p.closing.Load() {
		p.mu.Unlock()
		return ErrClosed
	}
	p.listeners[ln] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.listeners, ln)
		p.mu.Unlock()
	}()
	backoff := 5 * time.Millisecond
	for {
		// An Accept holds Shutdown's wait: a connection accepted while
		// Shutdown begins is served, not closed unanswered (its client
		// just connected and would read EOF; TestL7Upgrade saw it).
		if !p.holdAccept() {
			return ErrClosed
		}
		c, err := ln.Accept()
		if err != nil {
			p.wg.Done()
			if p.closing.Load() {
				return ErrClosed // ln stays open if Shutdown could stop it without closing
			}
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ECONNABORTED) {
				// Out of descriptors: wait for connections to end, as
				// net/http does, rather than spin or stop serving.
				time.Sleep(backoff)
				backoff = min(2*backoff, time.Second)
				continue
			}
			ln.Close()
			return err
		}
		backoff = 5 * time.Millisecond
		cc := &conn{p: p, c: c, flow: flowOf(c), in: clientReader{c: c}}
		cc.state.Store(stateNew) // not idle: closeIdle leaves it its first request
		p.track(cc)              // takes over the Accept's hold
		go cc.serve()
	}
}

func flowOf(c net.Conn) Flow {
	return Flow{Src: addrPort(c.RemoteAddr()), Dst: addrPort(c.LocalAddr())}
}

func addrPort(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		ap := t.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// holdAccept counts an Accept about to run in Shutdown's wait group, unless
// Shutdown began: under mu, so no Add races Shutdown's Wait at zero.
func (p *Proxy) holdAccept() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing.Load() {
		return false
	}
	p.wg.Add(1)
	return true
}

// track registers an accepted connection; the Accept's hold (holdAccept)
// becomes the connection's, released by untrack.
func (p *Proxy) track(c *conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.conns[c] = struct{}{}
}

func (p *Proxy) untrack(c *conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	p.wg.Done()
}

// Shutdown stops every Serve, closes idle connections and waits for
// in-flight requests to finish (each connection closes after its current
// response) or ctx to end, then closes the rest and returns ctx's error.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	if !p.closing.Swap(true) {
		close(p.done)
	}
	for ln := range p.listeners {
		// Stop Accept without closing the socket when possible: the
		// caller may hand it to the next proxy (restart, upgrade), and
		// connections arriving meanwhile wait in its backlog.
		if d, ok := ln.(deadliner); !ok || d.SetDeadline(aLongTimeAgo) != nil {
			ln.Close()
		}
	}
	p.mu.Unlock()
	h2done := make(chan error, 1)
	go func() { h2done <- p.shutdownH2(ctx) }()
	finished := make(chan struct{})
	go func() { p.wg.Wait(); <-h2done; close(finished) }()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		p.closeIdle()
		select {
		case <-finished:
			return nil
		case <-ctx.Done():
			p.mu.Lock()
			for c := range p.conns {
				c.c.Close()
			}
			p.mu.Unlock()
			<-finished
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// closeIdle wakes every connection that waits for its next request; it
// sees the proxy closing and ends. A connection whose request began is
// left to finish it.
func (p *Proxy) closeIdle() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		if c.state.CompareAndSwap(stateIdle, stateClosed) {
			c.c.SetReadDeadline(aLongTimeAgo)
		}
	}
}

var aLongTimeAgo = time.Unix(1, 0)

// recoverConn turns a panic on a connection's goroutine into the end of
// that connection: a bug must not take the agent, and every other
// connection, down with it. Deferred by each goroutine the proxy starts.
func (p *Proxy) recoverConn(c net.Conn) {
	if r := recover(); r != nil {
		if p.cfg.Logf != nil {
			p.cfg.Logf("l7proxy: panic serving %v: %v\n%s", c.RemoteAddr(), r, debug.Stack())
		}
		c.Close()
	}
}

func (p *Proxy) emit(e Event) {
	if p.cfg.Events != nil {
		p.cfg.Events(e)
	}
}
