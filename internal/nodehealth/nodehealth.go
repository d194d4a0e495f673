// Package nodehealth probes the other nodes' agents: each agent asks every
// other node's health endpoint (/livez on the healthz port, over the node
// network, from inside --netns) and keeps the last answer per node, which
// fastpathctl status and /metrics report. A node that stops answering is
// one whose agent is down or which this node cannot reach.
package nodehealth

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/fastpath-net/fastpath/internal/netnsrun"
)

// Peer is another node.
type Peer struct {
	Name string
	Addr netip.Addr // its InternalIP
}

// Result is the last probe of one node.
type Result struct {
	Node      string        `json:"node"`
	Address   string        `json:"address"`
	Reachable bool          `json:"reachable"`
	Latency   time.Duration `json:"latency"` // of the last answered probe
	Error     string        `json:"error,omitempty"`
	Checked   time.Time     `json:"checked"`
}

// Prober probes the peers every interval.
type Prober struct {
	port    int
	timeout time.Duration
	peers   func() []Peer
	client  *http.Client

	mu      sync.Mutex
	results map[string]Result
}

// New returns a prober of the peers' /livez on port, dialling from inside
// the network namespace netns ("" = the process's own).
func New(netns string, port int, timeout time.Duration, peers func() []Peer) *Prober {
	dial := func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		// The dial must happen on a thread inside netns: net/http dials
		// on goroutines of its own.
		err = netnsrun.Do(netns, func() error {
			var d net.Dialer
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	return &Prober{
		port: port, timeout: timeout, peers: peers, results: map[string]Result{},
		client: &http.Client{Timeout: timeout, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true, DialContext: dial}},
	}
}

// Run probes until ctx ends.
func (p *Prober) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		p.Once(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Once probes every peer, concurrently, and forgets nodes that are gone.
func (p *Prober) Once(ctx context.Context) {
	peers := p.peers()
	out := make(chan Result, len(peers))
	for _, peer := range peers {
		go func() { out <- p.probe(ctx, peer) }()
	}
	fresh := make(map[string]Result, len(peers))
	for range peers {
		r := <-out
		fresh[r.Node] = r
	}
	p.mu.Lock()
	p.results = fresh
	p.mu.Unlock()
}

func (p *Prober) probe(ctx context.Context, peer Peer) Result {
	r := Result{Node: peer.Name, Address: peer.Addr.String(), Checked: time.Now()}
	url := fmt.Sprintf("http://%s/livez", net.JoinHostPort(peer.Addr.String(), strconv.Itoa(p.port)))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	start := time.Now()
	resp, err := p.client.Do(req)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		r.Error = fmt.Sprintf("%s: %s", url, resp.Status)
		return r
	}
	r.Reachable, r.Latency = true, time.Since(start)
	return r
}

// Results are the last probes, by node name.
func (p *Prober) Results() []Result {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	out := make([]Result, 0, len(p.results))
	for _, r := range p.results {
		out = append(out, r)
	}
	p.mu.Unlock()
	slices.SortFunc(out, func(a, b Result) int {
		if a.Node < b.Node {
			return -1
		}
		if a.Node > b.Node {
			return 1
		}
		return 0
	})
	return out
}
