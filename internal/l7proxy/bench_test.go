package l7proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
)

// BenchmarkKeepAlive is one client connection's sequential requests
// through the proxy to a minimal upstream; test/bench/l7 is the benchmark
// of record (separate processes, one core).
func BenchmarkKeepAlive(b *testing.B) {
	upLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer upLn.Close()
	go func() {
		for {
			c, err := upLn.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					if _, err := http.ReadRequest(br); err != nil {
						return
					}
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			}()
		}
	}()
	pol := &testPolicy{}
	pol.set(b, baseRules)
	p := New(Config{Policy: pol, Dial: func(ctx context.Context, _ Flow) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", upLn.Addr().String())
	}, Events: func(Event) {}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go p.Serve(ln)
	defer p.Shutdown(context.Background())
	b.Run("direct", func(b *testing.B) { roundTrips(b, upLn.Addr().String(), b.Loop) })
	b.Run("proxy", func(b *testing.B) { roundTrips(b, ln.Addr().String(), b.Loop) })
	b.Run("proxy-parallel", func(b *testing.B) {
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) { roundTrips(b, ln.Addr().String(), pb.Next) })
	})
}

// roundTrips sends requests on one connection while next says so.
func roundTrips(b *testing.B, addr string, next func() bool) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Error(err)
		return
	}
	defer c.Close()
	br := bufio.NewReader(c)
	req := []byte("GET /v1/items?page=2 HTTP/1.1\r\nHost: api.example\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
	for next() {
		if _, err := c.Write(req); err != nil {
			b.Error(err)
			return
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			b.Error(err)
			return
		}
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != 200 {
			b.Error(resp.Status)
			return
		}
	}
}
