// Package l7proxy is the transparent HTTP proxy of L7 policy. The datapath
// redirects flows whose policy entry carries HTTP rules to a listener that
// the agent hands to Serve; the proxy reads each request, asks the Policy
// for the rule sets that apply to the flow (per request, so rule updates
// reach existing connections), forwards allowed requests to the original
// destination through Config.Dial, answers denied ones with 403 "Access
// denied", and reports one Event per request and applied rule set.
//
// Contract with the agent (branch l7dp):
//   - Flow.Dst is the original destination. With bpf_sk_assign or TPROXY
//     the accepted connection's LocalAddr is that address, so Serve takes
//     Flow{Src: RemoteAddr, Dst: LocalAddr}.
//   - Policy.Lookup returns every rule set that applies (the client's egress
//     and the server's ingress when both ends are L7-protected); all must
//     allow. An empty result denies: the proxy never forwards a request that
//     was not matched against rules. A flow that policy now allows at L4
//     only gets an Applied with an allow-all rule set.
//   - Dial opens the upstream leg; the agent's Dialer marks the socket so
//     the datapath does not redirect it again.
//   - Config.Events is called synchronously on the request's goroutine and
//     must not block.
//   - Shutdown stops accepting, closes idle connections and lets in-flight
//     requests finish; the agent passes the same listening socket to the
//     next proxy (restart, upgrade) so new connections queue, not fail.
package l7proxy

import (
	"context"
	"errors"
	"net"
	"net/netip"
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

// Config configures a Proxy. Policy is required; the rest has defaults.
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

func dialTCP(ctx context.Context, f Flow) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", f.Dst.String())
}

// ErrClosed is returned by Serve after Shutdown.
var ErrClosed = errors.New("l7proxy: proxy closed")

// Serve accepts connections on ln until Shutdown or an accept error; it
// may be called for several listeners. It closes ln when it returns.
func (p *Proxy) Serve(ln net.Listener) error {
	defer ln.Close()
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
		c, err := ln.Accept()
		if err != nil {
			if p.closing.Load() {
				return ErrClosed
			}
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ECONNABORTED) {
				// Out of descriptors: wait for connections to end, as
				// net/http does, rather than spin or stop serving.
				time.Sleep(backoff)
				backoff = min(2*backoff, time.Second)
				continue
			}
			return err
		}
		backoff = 5 * time.Millisecond
		cc := &conn{p: p, c: c, flow: flowOf(c), in: clientReader{c: c}}
		if !p.track(cc) {
			c.Close()
			return ErrClosed
		}
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

func (p *Proxy) track(c *conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing.Load() {
		return false
	}
	p.conns[c] = struct{}{}
	p.wg.Add(1)
	return true
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
		ln.Close()
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

func (p *Proxy) emit(e Event) {
	if p.cfg.Events != nil {
		p.cfg.Events(e)
	}
}
