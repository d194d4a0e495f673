package health

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock steps only when told, so the timeout rules are checked
// without waiting.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func newTestProxy(eligible *bool) (*Proxy, *fakeClock) {
	c := &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC)}
	p := NewProxy(time.Minute, func() bool { return *eligible })
	p.now = c.now
	return p, c
}

func serve(h http.Handler, path string) (int, http.Header, string) {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Header(), rec.Body.String()
}

// TestProxyHealth walks kube-proxy's states: starting (no sync yet),
// synced, a change waiting less and more than the timeout, and a node that
// is not eligible, with the exact bodies kube-proxy's json.Marshal writes.
func TestProxyHealth(t *testing.T) {
	eligible := true
	p, clock := newTestProxy(&eligible)
	h := p.Handler()
	for _, c := range []struct {
		step func()
		path string
		code int
		body string
	}{
		{func() {}, "/healthz", 200,
			`{"lastUpdated":"2026-01-02T03:04:05.0000006Z","currentTime":"2026-01-02T03:04:05.0000006Z","nodeEligible":true,"healthy":true}`},
		{p.Updated, "/livez", 200,
			`{"lastUpdated":"2026-01-02T03:04:05.0000006Z","currentTime":"2026-01-02T03:04:05.0000006Z","healthy":true,"status":{"IPv4":{"lastUpdated":"2026-01-02T03:04:05.0000006Z","healthy":true}}}`},
		{func() { p.QueuedUpdate(); clock.t = clock.t.Add(59 * time.Second) }, "/healthz", 200,
			`{"lastUpdated":"2026-01-02T03:05:04.0000006Z","currentTime":"2026-01-02T03:05:04.0000006Z","nodeEligible":true,"healthy":true,"status":{"IPv4":{"lastUpdated":"2026-01-02T03:04:05.0000006Z","healthy":true}}}`},
		{func() { p.QueuedUpdate(); clock.t = clock.t.Add(time.Second) }, "/healthz", 503,
			`{"lastUpdated":"2026-01-02T03:04:05.0000006Z","currentTime":"2026-01-02T03:05:05.0000006Z","nodeEligible":true,"healthy":false,"status":{"IPv4":{"lastUpdated":"2026-01-02T03:04:05.0000006Z","healthy":false}}}`},
		{func() {}, "/livez", 503,
			`{"lastUpdated":"2026-01-02T03:04:05.0000006Z","currentTime":"2026-01-02T03:05:05.0000006Z","healthy":false,"status":{"IPv4":{"lastUpdated":"2026-01-02T03:04:05.0000006Z","healthy":false}}}`},
		{func() { p.Updated(); eligible = false }, "/healthz", 503,
			`{"lastUpdated":"2026-01-02T03:05:05.0000006Z","currentTime":"2026-01-02T03:05:05.0000006Z","nodeEligible":false,"healthy":true,"status":{"IPv4":{"lastUpdated":"2026-01-02T03:05:05.0000006Z","healthy":true}}}`},
		{func() {}, "/livez", 200,
			`{"lastUpdated":"2026-01-02T03:05:05.0000006Z","currentTime":"2026-01-02T03:05:05.0000006Z","healthy":true,"status":{"IPv4":{"lastUpdated":"2026-01-02T03:05:05.0000006Z","healthy":true}}}`},
	} {
		c.step()
		code, hdr, body := serve(h, c.path)
		if code != c.code || body != c.body {
			t.Errorf("%s: %d %s\nwant %d %s", c.path, code, body, c.code, c.body)
		}
		if hdr.Get("Content-Type") != "application/json" || hdr.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: headers %v", c.path, hdr)
		}
	}
}

// TestServiceHealthAnswers checks the health-check node port's answer for
// a Service with and without local endpoints, and with the proxy
// unhealthy, byte for byte.
func TestServiceHealthAnswers(t *testing.T) {
	eligible := true
	p, clock := newTestProxy(&eligible)
	p.Updated()
	listened := 0
	s := NewServices(func(uint16) ([]net.Listener, error) { listened++; return nil, nil }, p, slog.New(slog.NewTextHandler(io.Discard, nil)))
	name := Name{Namespace: "ns", Name: "lb"}
	if err := s.Sync(map[Name]Check{name: {Port: 32000, LocalEndpoints: 2}}); err != nil {
		t.Fatal(err)
	}
	h := s.handler(name)
	body := func(n int, healthy bool) string {
		return "{\n\t\"service\": {\n\t\t\"namespace\": \"ns\",\n\t\t\"name\": \"lb\"\n\t},\n\t\"localEndpoints\": " +
			map[int]string{0: "0", 2: "2"}[n] + ",\n\t\"serviceProxyHealthy\": " + map[bool]string{true: "true", false: "false"}[healthy] + "\n}"
	}
	check := func(code int, weight string, want string) {
		t.Helper()
		c, hdr, b := serve(h, "/")
		if c != code || b != want || hdr.Get("X-Load-Balancing-Endpoint-Weight") != weight || hdr.Get("Content-Type") != "application/json" {
			t.Errorf("got %d %v %q\nwant %d weight %s %q", c, hdr, b, code, weight, want)
		}
	}
	check(200, "2", body(2, true))
	_ = s.Sync(map[Name]Check{name: {Port: 32000, LocalEndpoints: 0}})
	check(503, "0", body(0, true))
	_ = s.Sync(map[Name]Check{name: {Port: 32000, LocalEndpoints: 2}})
	p.QueuedUpdate()
	clock.t = clock.t.Add(2 * time.Minute)
	check(503, "2", body(2, false))
	if listened != 1 {
		t.Errorf("listened %d times for one port kept across syncs; want 1", listened)
	}
	// Closed: kube-proxy answers an empty 200 to a request racing the close.
	_ = s.Sync(nil)
	if c, _, b := serve(h, "/"); c != 200 || b != "" {
		t.Errorf("closed health check answered %d %q", c, b)
	}
}

// TestServiceHealthListenFailure: a port that cannot be opened is reported
// once while it keeps failing, again when the Service moves to another
// port, and served by a retry once it is free, without another Sync.
func TestServiceHealthListenFailure(t *testing.T) {
	eligible := true
	p, _ := newTestProxy(&eligible)
	var busy atomic.Bool
	busy.Store(true)
	s := NewServices(func(uint16) ([]net.Listener, error) {
		if busy.Load() {
			return nil, errors.New("address already in use")
		}
		return nil, nil
	}, p, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer s.Close()
	s.RetryEvery = 10 * time.Millisecond
	var mu sync.Mutex
	var reports []string
	s.OnListenError = func(n Name, port uint16, err error) {
		mu.Lock()
		reports = append(reports, fmt.Sprintf("%s:%d", n, port))
		mu.Unlock()
	}
	name := Name{Namespace: "ns", Name: "lb"}
	for _, port := range []uint16{32000, 32000, 32001} {
		if err := s.Sync(map[Name]Check{name: {Port: port, LocalEndpoints: 1}}); err == nil {
			t.Fatalf("Sync with port %d busy: no error", port)
		}
	}
	time.Sleep(50 * time.Millisecond) // retries fail too, and are not reported again
	mu.Lock()
	if want := []string{"ns/lb:32000", "ns/lb:32001"}; !slices.Equal(reports, want) {
		t.Errorf("reports %v, want %v", reports, want)
	}
	mu.Unlock()
	busy.Store(false)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if c, _, _ := serve(s.handler(name), "/"); c == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the freed port was never served")
		}
	}
}
