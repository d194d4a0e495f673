package flowmap

import (
	"io"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fastpath-net/fastpath/internal/flows"
)

func pod(ns, name string, port uint16, labels ...string) flows.Endpoint {
	return flows.Endpoint{Namespace: ns, Pod: name, Port: port, Labels: labels}
}

func TestMapAggregatesEdges(t *testing.T) {
	now := time.Unix(1000, 0)
	m := New(time.Minute, 3)
	m.now = func() time.Time { return now }
	web := pod("fp-shop", "web-5d8f", 80, "app=web")
	add := func(src, dst flows.Endpoint, v flows.Verdict, reason string) {
		typ := flows.TypeAllow
		if v == flows.VerdictDropped {
			typ = flows.TypeDrop
		}
		m.Add(&flows.Event{Type: typ, Verdict: v, Proto: "TCP", Source: src, Destination: dst, Reason: reason, Summary: reason + "!"})
	}
	add(pod("fp-shop", "cli", 0), web, flows.VerdictAllowed, "policy-allowed")
	add(pod("fp-shop", "cli", 0), pod("fp-shop", "web-77aa", 80, "app=web"), flows.VerdictAllowed, "policy-allowed")
	add(pod("fp-batch", "job", 0), web, flows.VerdictDropped, "policy-denied")
	// A pod of another node: no name, its identity's namespace and labels.
	add(flows.Endpoint{IP: "10.1.2.3", Namespace: "fp-shop", Labels: []string{"app=cli"}}, web, flows.VerdictAllowed, "policy-allowed")
	add(pod("fp-batch", "job", 0), flows.Endpoint{IP: "10.96.0.20", Port: 80, Service: "fp-shop/empty (10.96.0.20:80)"}, flows.VerdictDropped, "no-backend")

	g := m.Snapshot("")
	if got := strings.Join(g.Namespaces, ","); got != "fp-batch,fp-shop" {
		t.Errorf("namespaces %s", got)
	}
	var edges []string
	for _, e := range g.Edges {
		edges = append(edges, e.Source+">"+e.Target+":"+string(e.Verdict)+":"+strings.Join(e.Ports, "+")+":"+strconv.FormatUint(e.Count, 10))
	}
	want := "fp-batch/job>fp-shop/web:dropped:TCP/80:1 fp-batch/job>svc:fp-shop/empty:dropped:TCP/80:1 fp-shop/cli>fp-shop/web:allowed:TCP/80:3"
	if got := strings.Join(edges, " "); got != want {
		t.Errorf("edges\n got %s\nwant %s", got, want)
	}
	// The namespace filter keeps edges with an end in it.
	if g := m.Snapshot("fp-batch"); len(g.Edges) != 2 || len(g.Nodes) != 3 {
		t.Errorf("fp-batch: %d edges, %d nodes; want 2, 3", len(g.Edges), len(g.Nodes))
	}
	// A fourth edge evicts the oldest (MaxEdges 3); the window drops the rest.
	now = now.Add(time.Second)
	add(pod("fp-x", "a", 0), pod("fp-x", "b", 53), flows.VerdictAllowed, "policy-allowed")
	if n := len(m.Snapshot("").Edges); n != 3 {
		t.Errorf("%d edges after eviction, want 3", n)
	}
	now = now.Add(2 * time.Minute)
	if n := len(m.Snapshot("").Edges); n != 0 {
		t.Errorf("%d edges after the window, want 0", n)
	}
}

func TestHandlerServesPageAndGraph(t *testing.T) {
	m := New(time.Minute, 100)
	m.Add(&flows.Event{Type: flows.TypeL7, Verdict: flows.VerdictDenied, Source: pod("fp-a", "x", 0), Destination: pod("fp-a", "y", 8080),
		L7: &flows.L7{Protocol: "http", Method: "GET", Path: "/admin"}})
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	for path, want := range map[string]string{
		"/flows/":                    "<title>fastpath flow map</title>",
		"/v1/flowmap?namespace=fp-a": `"verdict":"denied"`,
	} {
		resp, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("%s: %s, want a body with %s", path, resp.Status, want)
		}
		for _, ext := range []string{`src=`, `href=`, `@import`} {
			if path == "/flows/" && strings.Contains(string(body), ext) {
				t.Errorf("the page loads something (%s): it must be self-contained", ext)
			}
		}
	}
}
