// Package flowmap aggregates flow events into a service map — workloads
// as nodes, flows between them as edges coloured by verdict — and serves
// it as JSON and as a small self-contained web page (assets embedded, no
// CDN), like Hubble UI's service map. The agent serves it next to the flow
// stream (--monitor-addr): one node's flows, no separate component.
package flowmap

import (
	"context"
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fastpath-net/fastpath/internal/flows"
)

// Node is one box of the map: a workload, a service, the world or an
// address nothing names.
type Node struct {
	ID        string `json:"id"`
	Label     string `json:"label"`
	Namespace string `json:"namespace,omitempty"`
	Kind      string `json:"kind"` // workload, service, world, ip
}

// Edge is every flow from Source to Target with one verdict.
type Edge struct {
	Source   string        `json:"source"`
	Target   string        `json:"target"`
	Verdict  flows.Verdict `json:"verdict"`
	Count    uint64        `json:"count"`
	Ports    []string      `json:"ports"` // "TCP/80", sorted
	Reason   string        `json:"reason,omitempty"`
	Summary  string        `json:"summary,omitempty"` // the last event's
	LastSeen time.Time     `json:"lastSeen"`
}

// Graph is what the page draws.
type Graph struct {
	Namespaces []string `json:"namespaces"` // every namespace seen, for the filter
	Nodes      []Node   `json:"nodes"`
	Edges      []Edge   `json:"edges"`
}

type edgeKey struct {
	src, dst string
	verdict  flows.Verdict
}

// Map holds the edges of the last Window. Safe for concurrent use.
type Map struct {
	Window   time.Duration // edges not seen for this long are dropped
	MaxEdges int           // beyond it the oldest edge goes

	mu    sync.Mutex
	nodes map[string]Node
	edges map[edgeKey]*Edge
	now   func() time.Time
}

// New returns an empty map keeping edges for window, at most maxEdges.
func New(window time.Duration, maxEdges int) *Map {
	return &Map{Window: window, MaxEdges: maxEdges, nodes: map[string]Node{}, edges: map[edgeKey]*Edge{}, now: time.Now}
}

// Run adds the hub's events until ctx ends.
func (m *Map) Run(ctx context.Context, hub *flows.Hub) {
	sub := hub.Subscribe(flows.Filter{}, 4096)
	defer sub.Close()
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-sub.C:
			m.Add(&e)
		}
	}
}

// node is the map node of a flow's end. Pods group by their workload's
// app label when the identity has one, as a Deployment's pods are one
// workload; a service frontend is its own node.
func node(p *flows.Endpoint) Node {
	switch {
	case p.Service != "":
		name, _, _ := strings.Cut(p.Service, " ")
		ns, _, _ := strings.Cut(name, "/")
		return Node{ID: "svc:" + name, Label: name, Namespace: ns, Kind: "service"}
	case p.Pod != "" || p.Namespace != "":
		// A remote pod is known by its identity only: its app label, if
		// any, still puts it with its workload's local pods.
		label := p.Pod
		if label == "" {
			label = p.IP
		}
		for _, l := range p.Labels {
			if v, ok := strings.CutPrefix(l, "app="); ok {
				label = v
				break
			}
		}
		return Node{ID: p.Namespace + "/" + label, Label: label, Namespace: p.Namespace, Kind: "workload"}
	case p.World:
		return Node{ID: "world", Label: "world", Kind: "world"}
	case p.IP == "":
		return Node{ID: "local-socket", Label: "a local socket", Kind: "ip"}
	}
	return Node{ID: p.IP, Label: p.IP, Kind: "ip"}
}

// Add counts one event on its edge.
func (m *Map) Add(e *flows.Event) {
	if e.Type != flows.TypeDrop && e.Type != flows.TypeAllow && e.Type != flows.TypeL7 {
		return
	}
	src, dst := node(&e.Source), node(&e.Destination)
	port := e.Proto
	if e.Destination.Port != 0 {
		port += "/" + strconv.Itoa(int(e.Destination.Port))
	}
	if e.L7 != nil {
		port = strings.ToUpper(e.L7.Protocol) + " " + e.L7.Method + " " + e.L7.Path
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.nodes[src.ID], m.nodes[dst.ID] = src, dst
	k := edgeKey{src.ID, dst.ID, e.Verdict}
	ed := m.edges[k]
	if ed == nil {
		if m.MaxEdges > 0 && len(m.edges) >= m.MaxEdges {
			m.evictOldest()
		}
		ed = &Edge{Source: src.ID, Target: dst.ID, Verdict: e.Verdict}
		m.edges[k] = ed
	}
	ed.Count++
	ed.Reason, ed.Summary, ed.LastSeen = e.Reason, e.Summary, now
	if !slices.Contains(ed.Ports, port) && len(ed.Ports) < 8 {
		ed.Ports = append(ed.Ports, port)
		slices.Sort(ed.Ports)
	}
}

func (m *Map) evictOldest() {
	var oldest edgeKey
	var at time.Time
	for k, e := range m.edges {
		if at.IsZero() || e.LastSeen.Before(at) {
			oldest, at = k, e.LastSeen
		}
	}
	delete(m.edges, oldest)
}

// Snapshot is the graph of the edges seen within Window with an end in
// namespace ("" = all).
func (m *Map) Snapshot(namespace string) Graph {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	g := Graph{Namespaces: []string{}, Nodes: []Node{}, Edges: []Edge{}}
	seenNS, used := map[string]bool{}, map[string]bool{}
	for k, e := range m.edges {
		if m.Window > 0 && now.Sub(e.LastSeen) > m.Window {
			delete(m.edges, k)
			continue
		}
		s, d := m.nodes[e.Source], m.nodes[e.Target]
		for _, ns := range []string{s.Namespace, d.Namespace} {
			if ns != "" && !seenNS[ns] {
				seenNS[ns] = true
				g.Namespaces = append(g.Namespaces, ns)
			}
		}
		if namespace != "" && s.Namespace != namespace && d.Namespace != namespace {
			continue
		}
		c := *e
		c.Ports = slices.Clone(e.Ports)
		g.Edges = append(g.Edges, c)
		used[e.Source], used[e.Target] = true, true
	}
	for id := range used {
		g.Nodes = append(g.Nodes, m.nodes[id])
	}
	slices.Sort(g.Namespaces)
	slices.SortFunc(g.Nodes, func(a, b Node) int { return strings.Compare(a.ID, b.ID) })
	slices.SortFunc(g.Edges, func(a, b Edge) int {
		return strings.Compare(a.Source+"\x00"+a.Target+"\x00"+string(a.Verdict), b.Source+"\x00"+b.Target+"\x00"+string(b.Verdict))
	})
	return g
}

//go:embed web
var web embed.FS

// Handler serves the page at /flows/ and the graph at /v1/flowmap
// (?namespace= filters).
func (m *Map) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/flowmap", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(m.Snapshot(r.URL.Query().Get("namespace")))
	})
	sub, _ := fs.Sub(web, "web")
	mux.Handle("/flows/", http.StripPrefix("/flows/", http.FileServerFS(sub)))
	mux.Handle("/flows", http.RedirectHandler("/flows/", http.StatusMovedPermanently))
	return mux
}
