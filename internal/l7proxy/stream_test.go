package l7proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"
)

// zeros is an endless reader that allocates nothing per read.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// allocated is the bytes allocated by the whole test process so far: a
// proxy that held a body in memory would allocate at least its size.
func allocated() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.TotalAlloc
}

// 100 MB through an allowed request and 100 MB back, with bounded memory:
// the whole process (client, proxy and upstream) allocates a small
// fraction of that.
func TestLargeBodiesStreamed(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 200 MB over loopback")
	}
	const size = 100 << 20
	const budget = 16 << 20
	e := newEnv(t)
	c := e.dial()
	c.c.SetDeadline(time.Now().Add(2 * time.Minute))

	before := allocated()
	go func() {
		fmt.Fprintf(c.c, "PUT /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n", size)
		io.Copy(c.c, io.LimitReader(zeros{}, size))
	}()
	resp, body := c.read("PUT")
	expect(t, resp, body, 200, fmt.Sprintf("PUT /upload host=a len=%d ", size))
	if a := allocated() - before; a > budget {
		t.Fatalf("100 MB request body: the process allocated %d MiB", a>>20)
	}

	before = allocated()
	c.send(get(fmt.Sprintf("/big?size=%d", size)))
	resp, err := http.ReadResponse(c.br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || n != size {
		t.Fatalf("response body: %d bytes, %v", n, err)
	}
	if a := allocated() - before; a > budget {
		t.Fatalf("100 MB response body: the process allocated %d MiB", a>>20)
	}
	// Chunked request body of the same size.
	before = allocated()
	go func() {
		io.WriteString(c.c, "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
		chunk := []byte(fmt.Sprintf("%x\r\n%s\r\n", 64<<10, strings.Repeat("x", 64<<10)))
		for range size / (64 << 10) {
			c.c.Write(chunk)
		}
		io.WriteString(c.c, "0\r\n\r\n")
	}()
	resp, body = c.read("POST")
	expect(t, resp, body, 200, fmt.Sprintf("POST /upload host=a len=%d ", size))
	if a := allocated() - before; a > budget {
		t.Fatalf("100 MB chunked body: the process allocated %d MiB", a>>20)
	}
}

// Idle keep-alive connections hold no buffers: only their goroutine and
// socket.
func TestIdleConnectionsHoldNoBuffers(t *testing.T) {
	e := newEnv(t)
	const n = 200
	heap := func() uint64 {
		runtime.GC()
		runtime.GC() // twice: sync.Pool keeps a victim cache across one
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	var clients []*client
	before := heap()
	for range n {
		c := e.dial()
		// Denied: no upstream connection, which would count the test
		// upstream's own buffers.
		resp, _ := c.do(get("/admin"))
		if resp.StatusCode != 403 {
			t.Fatal(resp.Status)
		}
		clients = append(clients, c)
	}
	// The test's own client side holds a 4 KiB bufio.Reader per connection.
	perConn := (int64(heap())-int64(before))/n - 4096
	t.Logf("heap per idle connection (proxy side and client socket): %d bytes", perConn)
	if perConn > 4<<10 {
		t.Fatalf("%d bytes of heap per idle connection: buffers are held (a reader alone is %d)", perConn, e.proxy.cfg.MaxHeaderBytes)
	}
	// They still work.
	resp, body := clients[n/2].do(get("/public"))
	expect(t, resp, body, 200, "GET /public")
}

func TestShutdownLetsInFlightFinish(t *testing.T) {
	e := newEnv(t)
	idle := e.dial()
	resp, _ := idle.do(get("/public"))
	if resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	busy := e.dial()
	busy.send("PUT /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
	time.Sleep(50 * time.Millisecond) // the request is at the upstream
	done := make(chan error, 1)
	go func() { done <- e.proxy.Shutdown(context.Background()) }()

	resp, body := busy.read("PUT")
	expect(t, resp, body, 200, "PUT /slow")
	if !resp.Close {
		t.Error("a response during shutdown should say Connection: close")
	}
	busy.closed()
	idle.closed()
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-e.serveErr; !errors.Is(err, ErrClosed) {
		t.Fatalf("Serve returned %v, want ErrClosed", err)
	}
}

// A connection accepted but whose first request has not arrived when
// Shutdown starts (the listener was just handed to the next agent) gets
// that request answered, with Connection: close, instead of a close.
func TestShutdownServesNewConnections(t *testing.T) {
	e := newEnv(t)
	fresh := e.dial()
	time.Sleep(50 * time.Millisecond) // accepted by the proxy
	done := make(chan error, 1)
	go func() { done <- e.proxy.Shutdown(context.Background()) }()
	time.Sleep(50 * time.Millisecond) // idle connections are closed by now
	fresh.send(get("/public/fresh"))
	resp, body := fresh.read("GET")
	expect(t, resp, body, 200, "GET /public/fresh")
	if !resp.Close {
		t.Error("a response during shutdown should say Connection: close")
	}
	fresh.closed()
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

func TestShutdownDeadlineClosesTheRest(t *testing.T) {
	e := newEnv(t)
	busy := e.dial()
	busy.send("PUT /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := e.proxy.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v, want DeadlineExceeded", err)
	}
	busy.closed()
}

// A restart hands the listening socket to a new proxy: a connection made
// while no proxy accepts waits in the backlog and is served by the next.
func TestListenerHandOver(t *testing.T) {
	e := newEnv(t)
	resp, body := e.dial().do(get("/public"))
	expect(t, resp, body, 200, "GET /public")
	if err := e.proxy.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-e.serveErr; !errors.Is(err, ErrClosed) {
		t.Fatalf("Serve: %v", err)
	}
	c := e.dial() // accepted by the kernel, waiting for a proxy
	c.send(get("/public/during-restart"))

	next := New(e.proxy.cfg)
	go next.Serve(e.ln)
	t.Cleanup(func() { next.Shutdown(context.Background()); e.ln.Close() })
	resp, body = c.read("GET")
	expect(t, resp, body, 200, "GET /public/during-restart")
}

// gatedListener's Accept takes a connection from the socket, then holds it
// until gate closes: the accept that returns while Shutdown begins.
type gatedListener struct {
	net.Listener
	accepted chan struct{}
	gate     chan struct{}
}

func (l *gatedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	close(l.accepted)
	<-l.gate
	return c, nil
}

// A connection whose Accept returns just as Shutdown begins (an upgrade's
// old agent stopping while a client connects) gets its request answered:
// before, it was closed unanswered and the client read EOF (TestL7Upgrade,
// under load), and Shutdown did not wait for it.
func TestShutdownServesAConnectionAcceptedAsItBegins(t *testing.T) {
	e := newEnv(t)
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &gatedListener{Listener: raw, accepted: make(chan struct{}), gate: make(chan struct{})}
	t.Cleanup(func() { raw.Close() })
	cfg := e.proxy.cfg
	cfg.Dial = func(ctx context.Context, _ Flow) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", e.upAddr)
	}
	p := New(cfg)
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }()

	c, err := net.Dial("tcp", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	<-ln.accepted
	done := make(chan error, 1)
	go func() { done <- p.Shutdown(context.Background()) }()
	for !p.closing.Load() {
		time.Sleep(time.Millisecond)
	}
	close(ln.gate)
	cl := &client{t: t, c: c, br: bufio.NewReader(c)}
	cl.send(get("/public/accepted-late"))
	resp, body := cl.read("GET")
	expect(t, resp, body, 200, "GET /public/accepted-late")
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-served; !errors.Is(err, ErrClosed) {
		t.Fatalf("Serve returned %v, want ErrClosed", err)
	}
}
