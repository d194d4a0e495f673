package loadgen

import (
	"net"
	"strings"
	"testing"
	"time"
)

func TestHist(t *testing.T) {
	var h hist
	for v := int64(1); v <= 1000; v++ {
		h.record(v * 1000) // 1 µs .. 1 ms
	}
	for q, want := range map[float64]float64{0.5: 500e3, 0.99: 990e3} {
		got := float64(h.quantile(q))
		if got < want*0.99 || got > want*1.01 {
			t.Errorf("q%.2f = %.0f ns, want %.0f within 1 %%", q, got, want)
		}
	}
	var o hist
	o.record(5e9)
	h.merge(&o)
	if h.n != 1001 || float64(h.max()) < 5e9*0.99 {
		t.Errorf("merge: n %d max %d", h.n, h.max())
	}
}

// TestAsk checks the wire format the control-path probes and the servers
// share: a closing request, a fixed-size reply starting with the name.
func TestAsk(t *testing.T) {
	c, s := net.Pipe()
	defer c.Close()
	go func() {
		defer s.Close()
		req := make([]byte, RequestSize)
		if _, err := s.Read(req); err != nil || req[0] != OpClose {
			return
		}
		reply := make([]byte, ReplySize)
		copy(reply, "be1:8081\n")
		_, _ = s.Write(reply)
	}()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	name, err := Ask(c)
	if err != nil || name != "be1:8081" {
		t.Fatalf("Ask = %q, %v", name, err)
	}
}

func TestGenerateRefuses(t *testing.T) {
	for _, req := range []Request{
		{NetNS: "/proc/self/ns/net", Targets: []string{"10.0.0.1:80"}, Kind: KindConn, Workers: 1, Duration: time.Millisecond},
		{NetNS: "/run/netns/fp-x", Targets: []string{"10.0.0.1:80"}, Kind: "flood", Workers: 1, Duration: time.Millisecond},
		{NetNS: "/run/netns/fp-x", Targets: nil, Kind: KindConn, Workers: 1, Duration: time.Millisecond},
	} {
		if _, err := generate(req); err == nil {
			t.Errorf("%+v: no error", req)
		}
	}
	for _, name := range []string{strings.Repeat("x", ReplySize), "a\nb", ""} {
		// Names are checked before any socket or process is made.
		if _, err := StartServers([]Listener{{Addr: "127.0.0.1:0", Name: name}}); err == nil {
			t.Errorf("server name %q: no error", name)
		}
	}
}
