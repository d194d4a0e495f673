package nodehealth

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"testing"
	"time"
)

// TestProber probes two loopback "nodes": one answering /livez, one
// refusing; a node that leaves the peer list is forgotten.
func TestProber(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/livez" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	n, _ := strconv.Atoi(port)
	peers := []Peer{{"up", netip.MustParseAddr("127.0.0.1")}, {"down", netip.MustParseAddr("127.0.0.2")}}
	// 127.0.0.2 is loopback too, and nothing listens there: refused at once.
	p := New("", n, time.Second, func() []Peer { return peers })
	p.Once(t.Context())
	got := p.Results()
	if len(got) != 2 || got[0].Node != "down" || got[1].Node != "up" {
		t.Fatalf("results %+v", got)
	}
	if got[0].Reachable || got[0].Error == "" || !got[1].Reachable || got[1].Latency <= 0 || got[1].Error != "" {
		t.Errorf("down: %+v; up: %+v", got[0], got[1])
	}
	peers = peers[:1]
	p.Once(t.Context())
	if got := p.Results(); len(got) != 1 || got[0].Node != "up" {
		t.Errorf("after down left the cluster: %+v", got)
	}
	var none *Prober
	if none.Results() != nil {
		t.Error("nil prober has results")
	}
}
