package l7proxy

import (
	"io"
	"net"
	"testing"
	"time"
)

// FuzzConnection feeds arbitrary bytes to a proxy connection in front of
// a real upstream and checks what must hold whatever the input: the proxy
// does not crash or hang, and the upstream never receives more requests
// than the rules allowed (nothing unmatched is forwarded, and no request
// hides inside another's body).
func FuzzConnection(f *testing.F) {
	for _, s := range []string{
		get("/public") + get("/admin") + get("/public/2"),
		"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + get("/public"),
		"POST /admin HTTP/1.1\r\nHost: a\r\nContent-Length: 30\r\n\r\n" + get("/public/hidden"),
		"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + get("/admin"),
		"PUT /echo HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
		"GET /public HTTP/1.0\r\n\r\n",
		http2Preface,
	} {
		f.Add([]byte(s))
	}
	e := newEnv(f)
	// Totals over every input: an upstream may count a request a moment
	// after the proxy closed the client (a body that broke mid-way), so a
	// per-input count could lag, never lead.
	var allowed int64
	f.Fuzz(func(t *testing.T, input []byte) {
		c, err := net.Dial("tcp", e.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		go func() {
			c.Write(input)
			c.(*net.TCPConn).CloseWrite()
		}()
		// The proxy must end the connection on its own once the input is
		// exhausted (EOF) or refused.
		if _, err := io.Copy(io.Discard, c); err != nil {
			t.Fatalf("connection not closed by the proxy: %v", err)
		}
		for _, ev := range e.takeEvents() {
			if ev.Verdict.Allowed {
				allowed++
			}
		}
		if got := e.upReqs.Load(); got > allowed {
			t.Fatalf("upstream received %d requests, the rules allowed %d", got, allowed)
		}
	})
}
