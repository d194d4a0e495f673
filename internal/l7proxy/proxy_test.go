package l7proxy

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fastpath-net/fastpath/internal/l7"
)

// testPolicy serves one set of rule sets to every flow; set swaps them.
type testPolicy struct{ applied atomic.Pointer[[]Applied] }

func (p *testPolicy) Lookup(Flow) []Applied {
	if a := p.applied.Load(); a != nil {
		return *a
	}
	return nil
}

func (p *testPolicy) set(t testing.TB, sets ...l7.RuleSet) {
	t.Helper()
	var applied []Applied
	for i, rs := range sets {
		c, err := l7.Compile(rs)
		if err != nil {
			t.Fatal(err)
		}
		applied = append(applied, Applied{Direction: Direction(i % 2), Endpoint: fmt.Sprint("fp-test/ep", i), Rules: c})
	}
	p.applied.Store(&applied)
}

// baseRules is issue 6's example policy.
var baseRules = l7.RuleSet{
	Allow: []l7.NamedRule{
		{Name: "public", Rule: l7.HTTPRule{Method: "GET|HEAD", Path: "/public(/.*)?"}},
		{Name: "token", Rule: l7.HTTPRule{Path: "/admin(/.*)?", Headers: []l7.HeaderMatch{{Name: "X-Token", Value: "s3cret"}}}},
		{Name: "api", Rule: l7.HTTPRule{Method: "GET", Host: `api\.example`, Path: "/v1/.*"}},
		{Name: "upload", Rule: l7.HTTPRule{Method: "POST|PUT", Path: "/upload|/echo|/slow"}},
		{Name: "big", Rule: l7.HTTPRule{Method: "GET", Path: "/big|/stream"}},
	},
	Deny: []l7.NamedRule{{Name: "no-secret", Rule: l7.HTTPRule{Path: "/public/secret.*"}}},
}

// env is a real upstream HTTP server (HTTP/1.1 and h2c), the proxy in
// front of it on loopback, and the events the proxy reported.
type env struct {
	t        testing.TB
	proxy    *Proxy
	addr     string // the proxy's listener
	ln       net.Listener
	upAddr   string
	policy   *testPolicy
	upReqs   atomic.Int64 // requests whose head reached the upstream
	upConns  atomic.Int64
	upDown   atomic.Bool // dial a port where nothing listens
	mu       sync.Mutex
	events   []Event
	serveErr chan error
}

func newEnv(t testing.TB) *env { return newEnvWith(t, nil) }

// newEnvWith lets a test change the proxy's Config before it starts.
func newEnvWith(t testing.TB, tune func(*Config)) *env {
	t.Helper()
	e := &env{t: t, policy: &testPolicy{}, serveErr: make(chan error, 1)}
	e.policy.set(t, baseRules)
	upLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	up := &http.Server{Handler: http.HandlerFunc(e.upstream), Protocols: &protos,
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				e.upConns.Add(1)
			}
		}}
	go up.Serve(upLn)
	t.Cleanup(func() { up.Close() })
	e.upAddr = upLn.Addr().String()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = ln.Addr().String()
	e.ln = ln
	t.Cleanup(func() { ln.Close() })
	cfg := Config{
		Policy: e.policy,
		// Loopback is not redirected: the original destination is the
		// test's upstream, whatever the accepted connection's address.
		Dial: func(ctx context.Context, f Flow) (net.Conn, error) {
			if f.Dst.String() != e.addr {
				return nil, fmt.Errorf("flow %v: Dst is not the accepted connection's local address", f)
			}
			var d net.Dialer
			if e.upDown.Load() {
				return d.DialContext(ctx, "tcp", "127.0.0.1:1")
			}
			return d.DialContext(ctx, "tcp", e.upAddr)
		},
		Events: func(ev Event) {
			e.mu.Lock()
			e.events = append(e.events, ev)
			e.mu.Unlock()
		},
	}
	if tune != nil {
		tune(&cfg)
	}
	e.proxy = New(cfg)
	go func() { e.serveErr <- e.proxy.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		e.proxy.Shutdown(ctx)
	})
	return e
}

// upstream answers "<method> <path> host=<host> len=<body bytes> sha=<...>"
// and serves a few special paths.
func (e *env) upstream(w http.ResponseWriter, r *http.Request) {
	e.upReqs.Add(1)
	switch r.URL.Path {
	case "/big": // size bytes, unknown length (chunked or close-delimited)
		n, _ := strconv.ParseInt(r.URL.Query().Get("size"), 10, 64)
		buf := make([]byte, 32<<10)
		for n > 0 {
			m := min(n, int64(len(buf)))
			if _, err := w.Write(buf[:m]); err != nil {
				return
			}
			n -= m
		}
		return
	case "/stream": // three flushed pieces
		for i := range 3 {
			fmt.Fprintf(w, "piece%d\n", i)
			http.NewResponseController(w).Flush()
		}
		return
	case "/slow":
		time.Sleep(300 * time.Millisecond)
	case "/early": // answers without reading the request body
		w.Header().Set("Connection", "close")
		http.Error(w, "too large", http.StatusRequestEntityTooLarge)
		return
	case "/ws": // a WebSocket-like echo after the 101
		if r.Header.Get("Upgrade") != "websocket" || r.Header.Get("Sec-Websocket-Key") == "" {
			http.Error(w, "not a handshake", http.StatusBadRequest)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ok\r\n\r\n")
		brw.Flush()
		io.Copy(conn, brw)
		return
	case "/hints":
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
	case "/trailer":
		w.Header().Set("Trailer", "X-Sum")
		io.WriteString(w, "body")
		w.Header().Set("X-Sum", "42")
		return
	}
	h := sha256.New()
	n, err := io.Copy(h, r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("X-Proto", r.Proto)
	fmt.Fprintf(w, "%s %s host=%s len=%d sha=%s", r.Method, r.URL.Path, r.Host, n, hex.EncodeToString(h.Sum(nil))[:16])
}

// takeEvents returns the events so far, waiting briefly for at least
// want of them (an event may follow the response it reports).
func (e *env) takeEvents(want ...int) []Event {
	deadline := time.Now().Add(10 * time.Second)
	for {
		e.mu.Lock()
		evs := e.events
		if len(want) == 0 || len(evs) >= want[0] || time.Now().After(deadline) {
			e.events = nil
			e.mu.Unlock()
			return evs
		}
		e.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
}

func (e *env) dial() *client {
	e.t.Helper()
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return &client{t: e.t, c: c, br: bufio.NewReader(c)}
}

// client speaks raw HTTP/1.1 so that tests control every byte.
type client struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

func (c *client) send(raw string) {
	c.t.Helper()
	if _, err := io.WriteString(c.c, raw); err != nil {
		c.t.Fatal(err)
	}
}

// read reads one response to a request with method.
func (c *client) read(method string) (*http.Response, string) {
	c.t.Helper()
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		c.t.Fatalf("reading response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("reading body: %v", err)
	}
	return resp, string(body)
}

func (c *client) do(raw string) (*http.Response, string) {
	c.t.Helper()
	c.send(raw)
	return c.read(strings.Fields(raw)[0])
}

// closed asserts that the proxy closed the connection.
func (c *client) closed() {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := c.br.ReadByte(); err == nil {
		c.t.Fatalf("connection still open: read %q", b)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		c.t.Fatal("connection still open after 5s")
	}
}

func get(path string, headers ...string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: svc.example\r\n" + strings.Join(headers, "") + "\r\n"
}

func expect(t *testing.T, resp *http.Response, body string, status int, bodyPrefix string) {
	t.Helper()
	if resp.StatusCode != status || !strings.HasPrefix(body, bodyPrefix) {
		t.Fatalf("got %d %q, want %d %q...", resp.StatusCode, body, status, bodyPrefix)
	}
}

func TestAllowAndDeny(t *testing.T) {
	e := newEnv(t)
	c := e.dial()
	resp, body := c.do(get("/public"))
	expect(t, resp, body, 200, "GET /public host=svc.example len=0")
	resp, body = c.do("POST /admin HTTP/1.1\r\nHost: svc.example\r\nContent-Length: 3\r\n\r\nabc")
	expect(t, resp, body, 403, "Access denied")
	if body != "Access denied" {
		t.Fatalf("denied body %q", body)
	}
	evs := e.takeEvents(2)
	if len(evs) != 2 {
		t.Fatalf("events: %+v", evs)
	}
	if ev := evs[0]; !ev.Verdict.Allowed || ev.Verdict.Rule != "public" || ev.Status != 200 || ev.Path != "/public" || ev.Method != "GET" ||
		ev.Proto != ProtoHTTP1 || ev.Endpoint != "fp-test/ep0" || ev.Flow.Dst.String() != e.addr {
		t.Errorf("allowed event: %+v", ev)
	}
	if ev := evs[1]; ev.Verdict.Allowed || ev.Verdict.Reason != l7.ReasonNoMatch || ev.Status != 403 || ev.Method != "POST" {
		t.Errorf("denied event: %+v", ev)
	}
	if n := e.upReqs.Load(); n != 1 {
		t.Fatalf("upstream saw %d requests, want 1 (the denied one must not reach it)", n)
	}
}

func TestRules(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name, req string
		status    int
		rule      string
	}{
		{"token allows admin", "POST /admin HTTP/1.1\r\nHost: a\r\nX-Token: s3cret\r\nContent-Length: 0\r\n\r\n", 200, "token"},
		{"wrong token", "POST /admin HTTP/1.1\r\nHost: a\r\nX-Token: nope\r\nContent-Length: 0\r\n\r\n", 403, ""},
		{"host matches", "GET /v1/items HTTP/1.1\r\nHost: api.example\r\n\r\n", 200, "api"},
		{"host with port", "GET /v1/items HTTP/1.1\r\nHost: API.example:8080\r\n\r\n", 200, "api"},
		{"other host", "GET /v1/items HTTP/1.1\r\nHost: evil.example\r\n\r\n", 403, ""},
		{"deny overrides allow", get("/public/secret"), 403, "no-secret"},
		{"allow beside the deny", get("/public/other"), 200, "public"},
		{"query is not the path", get("/public?x=/admin"), 200, "public"},
		{"encoded letters are the letters", get("/public/s%65cret"), 403, "no-secret"},
		{"merged slashes", get("//public//secret"), 403, "no-secret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := e.dial()
			resp, body := c.do(tc.req)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d %q, want %d", resp.StatusCode, body, tc.status)
			}
			evs := e.takeEvents(1)
			if len(evs) != 1 || evs[0].Verdict.Rule != tc.rule {
				t.Fatalf("events %+v, want one with rule %q", evs, tc.rule)
			}
		})
	}
}

func TestKeepAliveSecondDenied(t *testing.T) {
	e := newEnv(t)
	c := e.dial()
	resp, body := c.do(get("/public"))
	expect(t, resp, body, 200, "GET /public")
	resp, body = c.do("PUT /admin HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
	expect(t, resp, body, 403, "Access denied")
	if resp.Close {
		t.Fatal("denied request with a small body closed the connection")
	}
	// An empty line before a request line is ignored (RFC 9112 2.2).
	resp, body = c.do("\r\n" + get("/public/again"))
	expect(t, resp, body, 200, "GET /public/again")
	if n := e.upConns.Load(); n != 1 {
		t.Fatalf("%d upstream connections, want 1 kept alive", n)
	}
}

func TestPipelining(t *testing.T) {
	e := newEnv(t)
	c := e.dial()
	c.send(get("/public/1") + "POST /admin HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" +
		"PUT /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody" + get("/public/3"))
	resp, body := c.read("GET")
	expect(t, resp, body, 200, "GET /public/1")
	resp, body = c.read("POST")
	expect(t, resp, body, 403, "Access denied")
	resp, body = c.read("PUT")
	expect(t, resp, body, 200, "PUT /echo host=a len=4")
	resp, body = c.read("GET")
	expect(t, resp, body, 200, "GET /public/3")
}

func TestChunked(t *testing.T) {
	e := newEnv(t)
	c := e.dial()
	resp, body := c.do("POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n")
	want := sha256.Sum256([]byte("hello world"))
	expect(t, resp, body, 200, "POST /upload host=a len=11 sha="+hex.EncodeToString(want[:])[:16])
	// A response of unknown length reaches an HTTP/1.1 client chunked, and
	// the connection survives it.
	c.send(get("/stream"))
	resp, body = c.read("GET")
	if !slicesEqual(resp.TransferEncoding, []string{"chunked"}) || body != "piece0\npiece1\npiece2\n" {
		t.Fatalf("stream: TE %v body %q", resp.TransferEncoding, body)
	}
	resp, body = c.do(get("/public"))
	expect(t, resp, body, 200, "GET /public")
	// HTTP/1.0 gets it close-delimited.
	c = e.dial()
	resp, body = c.do("GET /stream HTTP/1.0\r\n\r\n")
	if resp.StatusCode != 200 || body != "piece0\npiece1\npiece2\n" {
		t.Fatalf("HTTP/1.0 stream: %d %q", resp.StatusCode, body)
	}
	c.closed()
}

func slicesEqual(a, b []string) bool { return strings.Join(a, ",") == strings.Join(b, ",") }

func TestExpectContinue(t *testing.T) {
	e := newEnv(t)
	c := e.dial()
	c.send("PUT /echo HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
	interim, err := http.ReadResponse(c.br, &http.Request{Method: "PUT"})
	if err != nil || interim.StatusCode != 100 {
		t.Fatalf("want 100 Continue before the body, got %v %v", interim, err)
	}
	c.send("hello")
	resp, body := c.read("PUT")
	expect(t, resp, body, 200, "PUT /echo host=a len=5")

	// Denied: 403 at once, no 100, and the connection closes (the client
	// may or may not send its body).
	c = e.dial()
	c.send("PUT /admin HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
	resp, body = c.read("PUT")
	expect(t, resp, body, 403, "Access denied")
	c.closed()

	// An expectation the proxy does not know: 417.
	c = e.dial()
	resp, _ = c.do("PUT /echo HTTP/1.1\r\nHost: a\r\nExpect: teapot\r\nContent-Length: 0\r\n\r\n")
	if resp.StatusCode != 417 {
		t.Fatalf("unknown expectation: %d", resp.StatusCode)
	}
}

func TestRuleUpdateOnOpenConnection(t *testing.T) {
	e := newEnv(t)
	c := e.dial()
	resp, body := c.do(get("/public"))
	expect(t, resp, body, 200, "GET /public")
	e.policy.set(t, l7.RuleSet{Allow: []l7.NamedRule{{Name: "only-v1", Rule: l7.HTTPRule{Path: "/v1/.*"}}}})
	resp, body = c.do(get("/public"))
	expect(t, resp, body, 403, "Access denied")
	resp, body = c.do(get("/v1/x"))
	expect(t, resp, body, 200, "GET /v1/x")
}

func TestEveryAppliedSetMustAllow(t *testing.T) {
	e := newEnv(t)
	egress := l7.RuleSet{Allow: []l7.NamedRule{{Name: "egress-any", Rule: l7.HTTPRule{}}}}
	ingress := l7.RuleSet{Allow: []l7.NamedRule{{Name: "ingress-get", Rule: l7.HTTPRule{Method: "GET"}}}}
	e.policy.set(t, ingress, egress)
	c := e.dial()
	resp, _ := c.do(get("/x"))
	if resp.StatusCode != 200 || len(e.takeEvents(2)) != 2 {
		t.Fatalf("both allow: %d", resp.StatusCode)
	}
	e.policy.set(t, egress, l7.RuleSet{})
	resp, _ = c.do(get("/x"))
	evs := e.takeEvents(2)
	if resp.StatusCode != 403 || len(evs) != 2 || !evs[0].Verdict.Allowed || evs[1].Verdict.Allowed || evs[1].Direction != Egress {
		t.Fatalf("second set denies: %d %+v", resp.StatusCode, evs)
	}
	// No rule set at all, or no Policy: fail closed.
	if New(Config{}).cfg.Policy.Lookup(Flow{}) != nil {
		t.Fatal("a proxy without Policy has rule sets")
	}
	e.policy.applied.Store(nil)
	resp, _ = c.do(get("/x"))
	evs = e.takeEvents(1)
	if resp.StatusCode != 403 || len(evs) != 1 || evs[0].Verdict.Reason != ReasonNoPolicy {
		t.Fatalf("no policy: %d %+v", resp.StatusCode, evs)
	}
}

// Each case must be refused before anything reaches the upstream, with
// the connection closed.
func TestSmugglingAndMalformedRefused(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name, raw string
		status    int
	}{
		{"CL and TE", "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"TE and CL", "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n", 400},
		{"differing CL", "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nhello", 400},
		{"CL list", "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 4, 5\r\n\r\nhello", 400},
		{"CL sign", "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: +4\r\n\r\nabcd", 400},
		{"obs-fold", "GET /public HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n Transfer-Encoding: chunked\r\n\r\n", 400},
		{"space before colon", "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\nContent-Length: 3\r\n\r\nabc", 400},
		{"TE gzip", "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501},
		{"TE twice", "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"TE on 1.0", "POST /upload HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"bare LF", "GET /public HTTP/1.1\nHost: a\n\n", 400},
		{"bare LF in a field", "GET /public HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", 400},
		{"bare CR", "GET /public HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", 400},
		{"two Hosts", "GET /public HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"no Host", "GET /public HTTP/1.1\r\n\r\n", 400},
		{"absolute-form", "GET http://a/public HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"CONNECT", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 400},
		{"dot-dot", get("/public/../admin"), 400},
		{"encoded dot-dot", get("/public/%2e%2E/admin"), 400},
		{"backslash", get(`/public\..\admin`), 400},
		{"encoded slash", get("/public%2F..%2Fadmin"), 400},
		{"encoded backslash", get("/public%5C..%5Cadmin"), 400},
		{"broken percent-encoding", get("/public%zz"), 400},
		{"NUL in value", "GET /public HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400},
		{"HTTP/0.9", "GET /public\r\n\r\n", 400},
		{"HTTP/2 in a request line", "GET /public HTTP/2.0\r\nHost: a\r\n\r\n", 505},
		{"endless empty lines", strings.Repeat("\r\n", 100) + get("/public"), 400},
		{"garbage", "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n", 400},
		{"head too large", "GET /public HTTP/1.1\r\nHost: a\r\nX: " + strings.Repeat("a", 20<<10) + "\r\n\r\n", 431},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.upReqs.Load()
			c := e.dial()
			c.send(tc.raw)
			resp, _ := c.read("GET")
			if resp.StatusCode != tc.status || !resp.Close {
				t.Fatalf("got %d (close %v), want %d and close", resp.StatusCode, resp.Close, tc.status)
			}
			c.closed()
			if n := e.upReqs.Load() - before; n != 0 {
				t.Fatalf("%d request(s) reached the upstream", n)
			}
		})
	}
}

// A bad chunk size shows up after the head was judged and sent: the
// client gets 400 and both connections close, so nothing after the bad
// chunk can be read as another request.
func TestInvalidChunkSize(t *testing.T) {
	e := newEnv(t)
	for _, size := range []string{"zz", "-1", "0x5", "fffffffffffffffff1", "5 5"} {
		t.Run(size, func(t *testing.T) {
			c := e.dial()
			c.send("POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + size + "\r\nhello\r\n0\r\n\r\n" + get("/public/smuggled"))
			resp, _ := c.read("POST")
			if resp.StatusCode != 400 || !resp.Close {
				t.Fatalf("got %d (close %v), want 400 and close", resp.StatusCode, resp.Close)
			}
			c.closed()
			for _, ev := range e.takeEvents() {
				if ev.Path == "/public/smuggled" {
					t.Fatal("the request after the bad chunk was served")
				}
			}
		})
	}
}

func TestClientGoesAwayMidRequest(t *testing.T) {
	e := newEnv(t)
	c := e.dial()
	c.send("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly a part")
	c.c.Close()
	// The proxy survives and serves the next client.
	resp, body := e.dial().do(get("/public"))
	expect(t, resp, body, 200, "GET /public")
}

func TestUpstreamDown(t *testing.T) {
	e := newEnv(t)
	e.upDown.Store(true)
	c := e.dial()
	resp, _ := c.do(get("/public"))
	if resp.StatusCode != 502 {
		t.Fatalf("status %d, want 502", resp.StatusCode)
	}
	// Denied requests do not need the upstream.
	resp, body := c.do(get("/admin"))
	expect(t, resp, body, 403, "Access denied")
}

func TestH2CPriorKnowledge(t *testing.T) {
	e := newEnv(t)
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	var dials atomic.Int64
	tr := &http.Transport{Protocols: &protos, DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		dials.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, network, e.addr)
	}}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	type result struct {
		path   string
		status int
		body   string
		proto  string
		err    error
	}
	// One request first, so that the transport has its connection before
	// the concurrent ones.
	if resp, err := cl.Get("http://svc.example/public/first"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("first request: %v %v", resp, err)
	} else {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	paths := []string{"/public/a", "/admin", "/public/b", "/public/secret", "/public/s%65cret"}
	results := make(chan result, len(paths))
	for _, path := range paths {
		go func() {
			resp, err := cl.Get("http://svc.example" + path)
			if err != nil {
				results <- result{path: path, err: err}
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			results <- result{path, resp.StatusCode, string(b), resp.Header.Get("X-Proto"), nil}
		}()
	}
	want := map[string]int{"/public/a": 200, "/admin": 403, "/public/b": 200, "/public/secret": 403, "/public/s%65cret": 403}
	for range paths {
		r := <-results
		if r.err != nil || r.status != want[r.path] {
			t.Fatalf("%s: %d %q %v, want %d", r.path, r.status, r.body, r.err, want[r.path])
		}
		if r.status == 200 && (!strings.HasPrefix(r.body, "GET "+r.path+" host=svc.example") || r.proto != "HTTP/2.0") {
			t.Fatalf("%s: upstream saw %q over %q, want HTTP/2.0", r.path, r.body, r.proto)
		}
		if r.status == 403 && r.body != "Access denied" {
			t.Fatalf("%s: body %q", r.path, r.body)
		}
	}
	// A POST with a body, on the same connection.
	resp, err := cl.Post("http://svc.example/upload", "text/plain", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(string(b), "POST /upload host=svc.example len=5") {
		t.Fatalf("POST: %d %q", resp.StatusCode, b)
	}
	if n := dials.Load(); n != 1 {
		t.Fatalf("%d client connections, want every stream on one", n)
	}
	evs := e.takeEvents(7)
	if len(evs) != 7 {
		for _, ev := range evs {
			t.Logf("event %s %s %d", ev.Method, ev.Path, ev.Status)
		}
		t.Fatalf("%d events, want one per stream", len(evs))
	}
	for _, ev := range evs {
		if ev.Proto != ProtoH2C || ev.Verdict.Allowed != (ev.Status == 200) {
			t.Fatalf("event %+v", ev)
		}
	}
}

// Upgrade: h2c is not followed: the request is answered in HTTP/1.1 and
// the connection stays HTTP/1.1, so every request is still judged.
func TestUpgradeH2CIgnored(t *testing.T) {
	e := newEnv(t)
	c := e.dial()
	resp, body := c.do("GET /public HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
	expect(t, resp, body, 200, "GET /public")
	if resp.Header.Get("X-Proto") != "HTTP/1.1" {
		t.Fatalf("upstream spoke %q", resp.Header.Get("X-Proto"))
	}
	resp, body = c.do(get("/admin"))
	expect(t, resp, body, 403, "Access denied")
}

func TestHeadAndInterimAndTrailers(t *testing.T) {
	e := newEnv(t)
	e.policy.set(t, l7.RuleSet{Allow: []l7.NamedRule{{Name: "any", Rule: l7.HTTPRule{}}}})
	c := e.dial()
	// HEAD: the upstream's Content-Length, no body, connection in step.
	resp, body := c.do("HEAD /public HTTP/1.1\r\nHost: a\r\n\r\n")
	if resp.StatusCode != 200 || body != "" || resp.ContentLength <= 0 {
		t.Fatalf("HEAD: %d len %d body %q", resp.StatusCode, resp.ContentLength, body)
	}
	// 103 Early Hints reaches an HTTP/1.1 client before the response.
	c.send(get("/hints"))
	interim, err := http.ReadResponse(c.br, &http.Request{Method: "GET"})
	if err != nil || interim.StatusCode != 103 || interim.Header.Get("Link") == "" {
		t.Fatalf("want 103 with Link first, got %v %v", interim, err)
	}
	resp, body = c.read("GET")
	expect(t, resp, body, 200, "GET /hints")
	// Trailers pass through chunked.
	resp, body = c.do(get("/trailer"))
	if body != "body" || resp.Trailer.Get("X-Sum") != "42" {
		t.Fatalf("trailer: body %q trailer %v", body, resp.Trailer)
	}
	resp, body = c.do(get("/public"))
	expect(t, resp, body, 200, "GET /public")
}

// An upstream that answers before reading the body: the client gets the
// answer, and the connection closes (the rest of the body cannot be framed).
func TestUpstreamAnswersEarly(t *testing.T) {
	e := newEnv(t)
	e.policy.set(t, l7.RuleSet{Allow: []l7.NamedRule{{Name: "any", Rule: l7.HTTPRule{}}}})
	c := e.dial()
	go func() {
		fmt.Fprintf(c.c, "PUT /early HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n", 64<<20)
		io.Copy(c.c, io.LimitReader(zeros{}, 64<<20))
	}()
	resp, body := c.read("PUT")
	expect(t, resp, body, 413, "too large")
}

func TestHeaderTimeout(t *testing.T) {
	e := newEnvWith(t, func(c *Config) { c.HeaderTimeout = 200 * time.Millisecond })
	c := e.dial()
	c.send("GET /public HTTP/1.1\r\nHost: a\r\n") // and nothing more
	resp, _ := c.read("GET")
	if resp.StatusCode != 408 || !resp.Close {
		t.Fatalf("slow head: %d, want 408 and close", resp.StatusCode)
	}
	c.closed()
}

func TestIdleTimeout(t *testing.T) {
	e := newEnvWith(t, func(c *Config) { c.IdleTimeout = 100 * time.Millisecond })
	c := e.dial()
	resp, body := c.do(get("/public"))
	expect(t, resp, body, 200, "GET /public")
	c.closed()
}

func TestHTTP10KeepAlive(t *testing.T) {
	e := newEnv(t)
	c := e.dial()
	resp, body := c.do("GET /public HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
	expect(t, resp, body, 200, "GET /public host="+e.addr)
	if resp.Close {
		t.Fatal("HTTP/1.0 keep-alive closed")
	}
	resp, body = c.do("GET /public/2 HTTP/1.0\r\n\r\n")
	expect(t, resp, body, 200, "GET /public/2")
	c.closed()
}

// The server receives the path the rules judged, not the one sent.
func TestServerGetsNormalizedPath(t *testing.T) {
	e := newEnv(t)
	c := e.dial()
	resp, body := c.do(get("//public//%61%2d?q=%41"))
	expect(t, resp, body, 200, "GET /public/a- host=svc.example")
	if ev := e.takeEvents(1); len(ev) != 1 || ev[0].Path != "/public/a-" {
		t.Fatalf("events %+v", ev)
	}
}

type panicPolicy struct{}

func (panicPolicy) Lookup(Flow) []Applied { panic("policy bug") }

// A panic while serving one connection ends that connection, not the
// process; it is logged.
func TestPanicCostsOneConnection(t *testing.T) {
	var logged atomic.Int64
	e := newEnvWith(t, func(c *Config) {
		c.Policy = panicPolicy{}
		c.Logf = func(string, ...any) { logged.Add(1) }
	})
	c := e.dial()
	c.send(get("/public"))
	c.closed()
	if logged.Load() != 1 {
		t.Fatalf("%d panics logged, want 1", logged.Load())
	}
	// The proxy still accepts and serves (fail closed: this policy only panics).
	c = e.dial()
	c.send(get("/public"))
	c.closed()
}

// HTTP/2: rules are looked up per stream, so an update reaches the next
// stream on the same connection.
func TestH2CRuleUpdate(t *testing.T) {
	e := newEnv(t)
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &protos, DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, e.addr)
	}}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	status := func(path string) int {
		resp, err := cl.Get("http://svc.example" + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := status("/public"); s != 200 {
		t.Fatalf("before: %d", s)
	}
	e.policy.set(t, l7.RuleSet{Allow: []l7.NamedRule{{Name: "only-v1", Rule: l7.HTTPRule{Path: "/v1/.*"}}}})
	if s := status("/public"); s != 403 {
		t.Fatalf("after the update: %d", s)
	}
	if s := status("/v1/x"); s != 200 {
		t.Fatalf("newly allowed: %d", s)
	}
	if s := status("/v1/%2e%2e/admin"); s != 400 {
		t.Fatalf("encoded dot-segment: %d", s)
	}
	if n := e.upConns.Load(); n != 1 {
		t.Fatalf("%d upstream connections, want 1", n)
	}
}

func TestWebSocket(t *testing.T) {
	e := newEnv(t)
	e.policy.set(t, l7.RuleSet{Allow: []l7.NamedRule{{Name: "ws", Rule: l7.HTTPRule{Method: "GET", Path: "/ws"}}}})
	handshake := "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	c := e.dial()
	c.send(handshake + "ping") // frames may follow the handshake at once
	resp, err := http.ReadResponse(c.br, &http.Request{Method: "GET"})
	if err != nil || resp.StatusCode != 101 || resp.Header.Get("Sec-Websocket-Accept") != "ok" {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	c.send("pong")
	buf := make([]byte, 8)
	if _, err := io.ReadFull(c.br, buf); err != nil || string(buf) != "pingpong" {
		t.Fatalf("echo %q %v", buf, err)
	}
	c.c.(*net.TCPConn).CloseWrite()
	c.closed()
	if ev := e.takeEvents(1); len(ev) != 1 || ev[0].Status != 101 || ev[0].Verdict.Rule != "ws" {
		t.Fatalf("events %+v", ev)
	}
	// Denied like any request.
	c = e.dial()
	resp, body := c.do(strings.Replace(handshake, "/ws", "/other", 1))
	expect(t, resp, body, 403, "Access denied")
}
