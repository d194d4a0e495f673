package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fastpath-net/fastpath/internal/nettopo"
	"github.com/fastpath-net/fastpath/internal/testpriv"
)

// TestMain lets the test binary act as the server child.
func TestMain(m *testing.M) {
	if IsChild() {
		os.Exit(Main())
	}
	os.Exit(m.Run())
}

// newTestNS makes an fp- namespace (loopback up) that the test removes.
func newTestNS(t *testing.T, tag string) *nettopo.NS {
	t.Helper()
	testpriv.Require(t)
	ns, err := nettopo.NewNS(fmt.Sprintf("%s%s-%d", nettopo.Prefix, tag, os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ns.Delete() })
	return ns
}

// TestServers runs the server child on two listeners in an fp- namespace
// and checks the wire format end to end: short connections, kept-alive
// ones, a stream, many at once, and that Close leaves no process.
func TestServers(t *testing.T) {
	ns := newTestNS(t, "srvp")
	addrs := []string{"127.0.0.1:18080", "127.0.0.1:18081"}
	names := []string{"be1:8080", "be2:8081"}
	s, err := StartServers([]Listener{{NS: ns, Addr: addrs[0], Name: names[0]}, {NS: ns, Addr: addrs[1], Name: names[1]}})
	if err != nil {
		t.Fatal(err)
	}
	pid := s.Pid()
	defer s.Close()
	dial := func(t *testing.T, i int) net.Conn {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := ns.DialContext(ctx, "tcp4", addrs[i])
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		return c
	}

	t.Run("short", func(t *testing.T) {
		for i := range addrs {
			c := dial(t, i)
			name, err := Ask(c)
			if err != nil || name != names[i] {
				t.Fatalf("Ask %s = %q, %v; want %q", addrs[i], name, err, names[i])
			}
			// The server closes after OpClose: EOF, nothing more.
			if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Errorf("after the reply: read %d, %v; want EOF", n, err)
			}
			c.Close()
		}
	})

	t.Run("keepalive", func(t *testing.T) {
		c := dial(t, 1)
		defer c.Close()
		req := make([]byte, RequestSize)
		req[0] = OpKeep
		reply := make([]byte, ReplySize)
		for i := 0; i < 500; i++ {
			// Every 7th request in two pieces, so a request split over
			// reads is put together.
			if i%7 == 0 {
				_, err = c.Write(req[:5])
				if err == nil {
					time.Sleep(time.Millisecond)
					_, err = c.Write(req[5:])
				}
			} else {
				_, err = c.Write(req)
			}
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			if _, err := io.ReadFull(c, reply); err != nil {
				t.Fatalf("reply %d: %v", i, err)
			}
			if string(reply[:len(names[1])+1]) != names[1]+"\n" {
				t.Fatalf("reply %d: %q", i, reply)
			}
		}
	})

	t.Run("stream", func(t *testing.T) {
		c := dial(t, 0)
		buf := make([]byte, 1<<20)
		buf[0] = OpStream
		for i := 0; i < 32; i++ { // 32 MiB: far more than the socket buffers
			if _, err := c.Write(buf); err != nil {
				t.Fatalf("write %d: %v", i, err)
			}
			buf[0] = OpClose // not a request any more: must be discarded
		}
		// Half-close: the server reads to EOF and closes without a word.
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, c)
		if n != 0 || err != nil {
			t.Errorf("after the stream: read %d bytes, %v; want a clean close", n, err)
		}
		c.Close()
	})

	t.Run("concurrent", func(t *testing.T) {
		const conns = 200
		var wg sync.WaitGroup
		errs := make(chan error, conns)
		start := make(chan struct{})
		for i := 0; i < conns; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				c, err := ns.DialContext(ctx, "tcp4", addrs[i%2])
				if err != nil {
					errs <- err
					return
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				<-start
				name, err := Ask(c)
				if err == nil && name != names[i%2] {
					err = fmt.Errorf("conn %d: name %q", i, name)
				}
				if err != nil {
					errs <- err
				}
			}(i)
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})

	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("server child %d still exists after Close (kill 0: %v)", pid, err)
	}
	c, err := ns.DialContext(context.Background(), "tcp4", addrs[0])
	if err == nil {
		c.Close()
		t.Error("a connection after Close was accepted")
	}
}

// TestServersEarlyDeath: Close reports a child that died before it.
func TestServersEarlyDeath(t *testing.T) {
	ns := newTestNS(t, "srvd")
	s, err := StartServers([]Listener{{NS: ns, Addr: "127.0.0.1:18080", Name: "x"}})
	if err != nil {
		t.Fatal(err)
	}
	// Our own child, by its PID.
	if err := syscall.Kill(s.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Err() == nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if s.Err() == nil {
		t.Fatal("Err is nil after the child was killed")
	}
	if err := s.Close(); err == nil {
		t.Error("Close of a dead child: no error")
	}
}
