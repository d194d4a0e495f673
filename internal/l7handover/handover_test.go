package l7handover

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func listen(t *testing.T) (*net.TCPListener, uint16) {
	t.Helper()
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln, uint16(ln.Addr().(*net.TCPAddr).Port)
}

func cookie(t *testing.T) uint64 {
	t.Helper()
	c, err := NetNSCookie("")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func offer(t *testing.T, path string, ln *net.TCPListener) *Offer {
	t.Helper()
	o, err := NewOffer(path, ln)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- o.Serve() }()
	t.Cleanup(func() {
		o.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return o
}

var ready = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// A successor announces itself at once and takes the listener only when
// ready; a connection that arrives while neither side accepts waits in the
// backlog and is accepted by the successor, after the predecessor closed
// its own descriptor: the socket survived the hand-over.
func TestHandOver(t *testing.T) {
	ln, port := listen(t)
	path := filepath.Join(t.TempDir(), "l7.sock")
	o := offer(t, path, ln)
	if o.Waiting() {
		t.Fatal("Waiting before any successor connected")
	}
	rules := make(chan struct{})
	type taken struct {
		ln  *net.TCPListener
		err error
	}
	res := make(chan taken, 1)
	go func() {
		l, err := Take(t.Context(), path, port, cookie(t), rules)
		res <- taken{l, err}
	}()
	waitFor(t, "a waiting successor", o.Waiting)
	select {
	case <-o.Done():
		t.Fatal("handed over before the successor was ready")
	case <-time.After(50 * time.Millisecond):
	}
	early, err := net.Dial("tcp4", ln.Addr().String()) // queued, nobody accepts
	if err != nil {
		t.Fatal(err)
	}
	defer early.Close()
	close(rules)
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	got := r.ln
	defer got.Close()
	select {
	case <-o.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the predecessor was not told of the hand-over")
	}
	o.Close()
	ln.Close() // the predecessor's copy only

	for i, c := range []net.Conn{early, dial(t, ln.Addr().String())} {
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		got.SetDeadline(time.Now().Add(5 * time.Second))
		s, err := got.Accept()
		if err != nil {
			t.Fatalf("connection %d: accept on the handed-over listener: %v", i, err)
		}
		b := make([]byte, 1)
		if _, err := io.ReadFull(s, b); err != nil || b[0] != 'x' {
			t.Fatalf("connection %d: read %q, %v", i, b, err)
		}
		s.Close()
	}
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatalf("after the hand-over: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 500 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no %s after 5 s", what)
}

func TestNoPredecessor(t *testing.T) {
	path := filepath.Join(t.TempDir(), "l7.sock")
	if _, err := Take(t.Context(), path, 1, 0, ready); !errors.Is(err, ErrNoPredecessor) {
		t.Fatalf("no socket file: %v, want ErrNoPredecessor", err)
	}
	ln, _ := listen(t)
	o := offer(t, path, ln)
	o.Close()
	if _, err := Take(t.Context(), path, 1, 0, ready); !errors.Is(err, ErrNoPredecessor) {
		t.Fatalf("offer closed: %v, want ErrNoPredecessor", err)
	}
}

// A predecessor that stops while its successor waits for its rules closes
// the successor's connection: Take fails at once, naming the cause, and
// the successor opens a listener of its own.
func TestPredecessorStops(t *testing.T) {
	ln, port := listen(t)
	path := filepath.Join(t.TempDir(), "l7.sock")
	o := offer(t, path, ln)
	rules := make(chan struct{})
	res := make(chan error, 1)
	go func() {
		_, err := Take(t.Context(), path, port, cookie(t), rules)
		res <- err
	}()
	waitFor(t, "a waiting successor", o.Waiting)
	o.Close()
	close(rules)
	if err := <-res; err == nil || errors.Is(err, ErrNoPredecessor) {
		t.Fatalf("Take from a stopped predecessor: %v, want an error", err)
	}
}

// A successor refuses a listener it would not have opened, and the
// predecessor keeps it and its offer.
func TestTakeRefuses(t *testing.T) {
	ln, port := listen(t)
	path := filepath.Join(t.TempDir(), "l7.sock")
	o := offer(t, path, ln)
	for _, c := range []struct {
		port   uint16
		cookie uint64
		want   string
	}{
		{port + 1, cookie(t), "want port"},
		{port, cookie(t) + 1, "another network namespace"},
	} {
		if _, err := Take(t.Context(), path, c.port, c.cookie, ready); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Take(port %d): %v, want an error with %q", c.port, err, c.want)
		}
	}
	select {
	case <-o.Done():
		t.Fatal("handed over although the successor refused")
	default:
	}
	got, err := Take(t.Context(), path, port, cookie(t), ready)
	if err != nil {
		t.Fatalf("after refusals: %v", err)
	}
	got.Close()
	<-o.Done()
}

func TestTakeCanceled(t *testing.T) {
	ln, port := listen(t)
	path := filepath.Join(t.TempDir(), "l7.sock")
	o := offer(t, path, ln)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := Take(ctx, path, port, cookie(t), make(chan struct{})); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled: %v", err)
	}
	waitFor(t, "the successor gone", func() bool { return !o.Waiting() })
}
