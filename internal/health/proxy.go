// Package health answers the questions kube-proxy's health servers answer,
// with the same status codes, headers and JSON bodies, so load balancers,
// kubelet probes and monitoring written for kube-proxy work unchanged
// (k8s.io/kubernetes/pkg/proxy/healthcheck, v1.37):
//
//   - /healthz and /livez on --healthz-addr: is the agent keeping the
//     datapath in step with the API (and, for /healthz, is this node
//     eligible for load-balancer traffic)?
//   - one server per healthCheckNodePort of a LoadBalancer Service with
//     externalTrafficPolicy Local: does this node have ready local
//     endpoints for it (services.go)?
package health

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// Family is the status map's key for the one proxier fastpath runs.
const Family = "IPv4"

// ProxierHealth is one IP family's health (kube-proxy's ProxierHealth).
type ProxierHealth struct {
	LastUpdated time.Time `json:"lastUpdated"`
	Healthy     bool      `json:"healthy"`
}

// Status is the JSON body of /healthz and /livez; field order and tags are
// kube-proxy's ProxyHealth, so the bytes are the same.
type Status struct {
	LastUpdated  time.Time                `json:"lastUpdated"`
	CurrentTime  time.Time                `json:"currentTime"`
	NodeEligible *bool                    `json:"nodeEligible,omitempty"`
	Healthy      bool                     `json:"healthy"`
	Status       map[string]ProxierHealth `json:"status,omitempty"`
}

// Proxy tracks whether the agent keeps up: it is unhealthy when a change
// has been waiting for longer than the timeout without a successful sync.
type Proxy struct {
	timeout  time.Duration
	eligible func() bool
	now      func() time.Time

	mu          sync.RWMutex
	lastUpdated time.Time // zero until the first Updated
	queued      time.Time // oldest change not yet programmed; zero: none
}

// NewProxy returns the tracker. eligible reports whether this node should
// get load-balancer traffic (k8s.Watcher.NodeEligible); kube-proxy's
// timeout is twice its sync period, 60s by default.
func NewProxy(timeout time.Duration, eligible func() bool) *Proxy {
	return &Proxy{timeout: timeout, eligible: eligible, now: time.Now}
}

// Updated records a successful sync: everything received is programmed.
func (p *Proxy) Updated() {
	p.mu.Lock()
	p.queued = time.Time{}
	p.lastUpdated = p.now()
	p.mu.Unlock()
}

// QueuedUpdate records that a change arrived and is not programmed yet.
func (p *Proxy) QueuedUpdate() {
	p.mu.Lock()
	if p.queued.IsZero() {
		p.queued = p.now()
	}
	p.mu.Unlock()
}

// Health is kube-proxy's ProxyHealthServer.Health for one family: healthy
// while starting (no sync yet), when nothing waits, or when the oldest
// waiting change is younger than the timeout.
func (p *Proxy) Health() Status {
	p.mu.RLock()
	defer p.mu.RUnlock()
	st := Status{Healthy: true, Status: map[string]ProxierHealth{}, CurrentTime: p.now()}
	if p.lastUpdated.IsZero() {
		return st
	}
	ok := p.queued.IsZero() || st.CurrentTime.Sub(p.queued) < p.timeout
	st.Status[Family] = ProxierHealth{LastUpdated: p.lastUpdated, Healthy: ok}
	st.LastUpdated, st.Healthy = p.lastUpdated, ok
	return st
}

// Handler serves /healthz and /livez.
func (p *Proxy) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		st := p.Health()
		eligible := p.eligible()
		st.NodeEligible = &eligible
		p.write(w, st, st.Healthy && eligible)
	})
	mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) {
		st := p.Health()
		p.write(w, st, st.Healthy)
	})
	return mux
}

// write answers like kube-proxy: a healthy answer's lastUpdated is the
// current time (older releases reported the last sync loop run, which
// happened even without changes).
func (p *Proxy) write(w http.ResponseWriter, st Status, healthy bool) {
	setJSONHeaders(w.Header())
	if healthy {
		w.WriteHeader(http.StatusOK)
		st.LastUpdated = p.now()
	} else {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	out, _ := json.Marshal(st)
	_, _ = fmt.Fprint(w, string(out))
}

func setJSONHeaders(h http.Header) {
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
}
