// Package flows is the agent's one place where flow events meet their
// consumers: the datapath's verdict ring (drops, sampled allows), the L7
// proxy's access log, and whoever watches — the HTTP stream behind
// `fastpathctl monitor`, the flow map page.
//
// Producers call Hub.Publish with a complete Event: names already resolved
// (pods, services, identities' labels) and Summary already a sentence,
// because consumers only filter and print. Publish never blocks and never
// allocates per subscriber beyond a channel send: a subscriber that reads
// too slowly loses events (counted in its Lost), not the producer.
//
// For the L7 proxy (branch l7dp): publish one Event per request with
// Type TypeL7, Verdict VerdictAllowed or VerdictDenied, Source/Destination
// filled like the datapath's (at least IP, Port, and Namespace/Pod when
// known), and L7 set; Summary e.g.
// `l7 denied: GET /admin by fp-x/allow-get (HTTP rule)`. `fastpathctl
// monitor --type l7` and the flow map (L7 denied edges) pick it up as is.
package flows

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Type is what kind of event it is; filters select on it.
type Type string

const (
	TypeDrop  Type = "drop"  // a packet the datapath dropped or rejected
	TypeAllow Type = "allow" // a new flow the datapath let through (sampled)
	TypeL7    Type = "l7"    // one request seen by the L7 proxy
	// TypeLost is written by StreamHandler, never published: Summary
	// says how many events this client missed.
	TypeLost Type = "lost"
)

// Verdict is the outcome the flow map colours an edge by.
type Verdict string

const (
	VerdictAllowed Verdict = "allowed"
	VerdictDropped Verdict = "dropped"
	VerdictDenied  Verdict = "denied" // L7 policy denied the request
)

// Endpoint is one end of a flow, with what the agent knows about it.
type Endpoint struct {
	IP        string   `json:"ip"`
	Port      uint16   `json:"port,omitempty"`
	Identity  uint32   `json:"identity,omitempty"`
	Namespace string   `json:"namespace,omitempty"`
	Pod       string   `json:"pod,omitempty"`
	Labels    []string `json:"labels,omitempty"` // the identity's, "k=v" sorted
	// Service is "ns/name:port" when this end is a service frontend.
	Service string `json:"service,omitempty"`
	// World marks an address outside the cluster (no pod, no node).
	World bool `json:"world,omitempty"`
}

// Workload names the end for the flow map: ns/pod, a service, "world" or
// the address.
func (e Endpoint) Workload() string {
	switch {
	case e.Pod != "":
		return e.Namespace + "/" + e.Pod
	case e.Service != "":
		return "svc:" + e.Service
	case e.World:
		return "world"
	}
	return e.IP
}

// L7 is the request part of an L7 event.
type L7 struct {
	Protocol string `json:"protocol"` // "http", ...
	Method   string `json:"method,omitempty"`
	Host     string `json:"host,omitempty"`
	Path     string `json:"path,omitempty"`
	Status   int    `json:"status,omitempty"`
	Rule     string `json:"rule,omitempty"` // the policy rule that decided
}

// Event is one flow event.
type Event struct {
	Time        time.Time `json:"time"`
	Node        string    `json:"node,omitempty"`
	Type        Type      `json:"type"`
	Verdict     Verdict   `json:"verdict"`
	Direction   string    `json:"direction,omitempty"` // "ingress" | "egress", as seen from the local pod
	Proto       string    `json:"proto,omitempty"`     // "TCP", "UDP", "SCTP", "ICMP"
	Source      Endpoint  `json:"source"`
	Destination Endpoint  `json:"destination"`
	// Reason is a stable code ("policy-denied", "no-backend", ...);
	// Summary the sentence a person reads.
	Reason  string `json:"reason"`
	Summary string `json:"summary"`
	L7      *L7    `json:"l7,omitempty"`
}

// IsPolicy reports whether a policy (L3/L4 or L7) decided the event.
func (e *Event) IsPolicy() bool {
	return e.Type == TypeL7 || strings.HasPrefix(e.Reason, "policy-")
}

// Filter selects events; zero fields select everything.
type Filter struct {
	// Types: drop, allow, l7, or "policy" (any event a policy decided).
	Types     []string `json:"types,omitempty"`
	Namespace string   `json:"namespace,omitempty"` // either end
	Pod       string   `json:"pod,omitempty"`       // "ns/name" or "name", either end
	Identity  uint32   `json:"identity,omitempty"`  // either end
	Port      uint16   `json:"port,omitempty"`      // either end
	Reason    string   `json:"reason,omitempty"`    // exact code
}

// Match reports whether e passes f.
func (f *Filter) Match(e *Event) bool {
	if len(f.Types) > 0 && !f.matchType(e) {
		return false
	}
	if f.Reason != "" && e.Reason != f.Reason {
		return false
	}
	return f.matchEnd(&e.Source) || f.matchEnd(&e.Destination)
}

func (f *Filter) matchType(e *Event) bool {
	for _, t := range f.Types {
		if Type(t) == e.Type || (t == "policy" && e.IsPolicy()) {
			return true
		}
	}
	return false
}

// matchEnd: the end-specific fields must all hold on one end.
func (f *Filter) matchEnd(p *Endpoint) bool {
	if f.Namespace != "" && p.Namespace != f.Namespace {
		return false
	}
	if f.Pod != "" && p.Pod != f.Pod && p.Namespace+"/"+p.Pod != f.Pod {
		return false
	}
	if f.Identity != 0 && p.Identity != f.Identity {
		return false
	}
	return f.Port == 0 || p.Port == f.Port
}

// Hub fans published events out to subscribers. The zero value is not
// usable; call NewHub.
type Hub struct {
	mu   sync.RWMutex
	subs map[*Subscription]struct{}
	sent atomic.Uint64
}

// NewHub returns a hub without subscribers.
func NewHub() *Hub { return &Hub{subs: map[*Subscription]struct{}{}} }

// Subscription receives the events matching its filter on C until Close.
type Subscription struct {
	C      <-chan Event
	c      chan Event
	filter Filter
	hub    *Hub
	lost   atomic.Uint64
	once   sync.Once
}

// Subscribe starts a subscription with a buffer of buf events.
func (h *Hub) Subscribe(f Filter, buf int) *Subscription {
	if buf < 1 {
		buf = 1
	}
	c := make(chan Event, buf)
	s := &Subscription{C: c, c: c, filter: f, hub: h}
	h.mu.Lock()
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	return s
}

// Lost is the number of matching events this subscriber missed because
// its buffer was full.
func (s *Subscription) Lost() uint64 { return s.lost.Load() }

// Close ends the subscription and closes C. Safe to call twice.
func (s *Subscription) Close() {
	s.once.Do(func() {
		s.hub.mu.Lock()
		delete(s.hub.subs, s)
		close(s.c)
		s.hub.mu.Unlock()
	})
}

// Publish hands e to every subscriber whose filter matches, without
// waiting for any of them.
func (h *Hub) Publish(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	for s := range h.subs {
		if !s.filter.Match(&e) {
			continue
		}
		select {
		case s.c <- e:
		default:
			s.lost.Add(1)
		}
	}
	h.sent.Add(1)
}

// Published is the number of events published so far.
func (h *Hub) Published() uint64 { return h.sent.Load() }
