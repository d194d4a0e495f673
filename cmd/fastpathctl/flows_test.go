package main

import (
	"bytes"
	"net"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/fastpath-net/fastpath/internal/endpoint"
	"github.com/fastpath-net/fastpath/internal/flows"
)

// `monitor` reads the agent's stream; the agent filters: only the event
// matching --type and --namespace reaches the output.
func TestMonitorReadsTheAgentStream(t *testing.T) {
	hub := flows.NewHub()
	srv := httptest.NewServer(flows.StreamHandler(hub, nil))
	defer srv.Close()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		// Published until the client, subscribed some time after it
		// connects, has what it waits for.
		for {
			hub.Publish(flows.Event{Type: flows.TypeAllow, Verdict: flows.VerdictAllowed, Summary: "other type",
				Source: flows.Endpoint{Namespace: "fp-mon"}})
			hub.Publish(flows.Event{Type: flows.TypeDrop, Verdict: flows.VerdictDropped, Summary: "other namespace",
				Source: flows.Endpoint{Namespace: "fp-else"}})
			hub.Publish(flows.Event{Type: flows.TypeDrop, Verdict: flows.VerdictDropped, Reason: "no-backend",
				Summary: "no backend for service fp-mon/web", Destination: flows.Endpoint{Namespace: "fp-mon", Port: 80}})
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	addr := strings.TrimPrefix(srv.URL, "http://")
	var out, errOut bytes.Buffer
	if code := run([]string{"monitor", "--agent", addr, "--type", "drop", "--namespace", "fp-mon", "--port", "80", "-n", "2"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2:\n%s", len(lines), out.String())
	}
	for _, l := range lines {
		if !strings.HasSuffix(l, "DROP  dropped no backend for service fp-mon/web") {
			t.Errorf("line %q", l)
		}
	}
	out.Reset()
	if code := run([]string{"monitor", "--agent", addr, "--reason", "no-backend", "-o", "json", "-n", "1"}, &out, &errOut); code != 0 ||
		!strings.Contains(out.String(), `"reason":"no-backend"`) {
		t.Fatalf("json: exit %d, %q %s", code, out.String(), errOut.String())
	}
	for _, bad := range [][]string{{"--type", "flood"}, {"--reason", "nope"}, {"--port", "70000"}} {
		errOut.Reset()
		if code := run(append([]string{"monitor", "--agent", addr}, bad...), &out, &errOut); code != 1 || !strings.Contains(errOut.String(), bad[0]) {
			t.Errorf("%v: exit %d, %q; want an error naming %s", bad, code, errOut.String(), bad[0])
		}
	}
}

// With no agent listening, `monitor` reads the pinned ring itself.
func TestMonitorFallsBackToThePinnedRing(t *testing.T) {
	dir := pinnedPolicyDrop(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	// The dropping pod has an endpoint record: the fallback names it.
	state := t.TempDir()
	eps, err := endpoint.Open(endpoint.Dir(state))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eps.Put(endpoint.Endpoint{Key: endpoint.Key{Network: "fp", ContainerID: "c1", IfName: "eth0"},
		IPs: []netip.Addr{netip.MustParseAddr("10.0.1.1")}, Pod: endpoint.Pod{Namespace: "fp-mon", Name: "client"}}); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"--bpffs-dir", dir, "--cni-state-dir", state, "monitor", "--agent", closed, "--type", "policy", "-n", "1"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(errOut.String(), "reading the pinned verdict ring directly") {
		t.Errorf("no note of the fallback: %q", errOut.String())
	}
	want := "DROP  dropped policy denied: egress of endpoint 9, peer identity world-ipv4, fp-mon/client -> 192.0.2.1 TCP/443"
	if got := strings.TrimSpace(out.String()); !strings.HasSuffix(got, want) {
		t.Errorf("got  %q\nwant suffix %q", got, want)
	}
}
