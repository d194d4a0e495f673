package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fastpath-net/fastpath/internal/testpriv"
)

// TestMain lets the test binary play the roles (upstream, proxy, load
// generator) that the harness starts as children of itself.
func TestMain(m *testing.M) {
	switch os.Getenv(roleEnv) {
	case "upstream":
		upstreamMain()
		return
	case "proxy":
		proxyMain()
		return
	case "loadgen":
		loadgenMain()
		return
	}
	os.Exit(m.Run())
}

// TestSmoke runs the whole harness with tiny settings: the real path (pods
// in fp- namespaces, the node's datapath, the L7 redirect to the proxy),
// then loopback and the RSS point. It checks that the report is complete,
// that every request succeeded and that the paths are what they claim
// (the harness itself refuses to measure unless a denied request gets the
// proxy's 403 on the L7 path and the upstream's 200 on the L4 path; the
// proxy worked on L7 and idled on L4). It checks no performance number: a
// benchmark is not a test.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes and moves traffic for a few seconds")
	}
	testpriv.Require(t)
	out := t.TempDir()
	cfg := config{out: out, duration: 200 * time.Millisecond, reps: 1, conns: []int{1, 4}, idle: 20, loopback: true}
	if err := run(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(out, "l7.md"))
	if err != nil {
		t.Fatal(err)
	}
	md := string(b)
	for _, want := range []string{
		"proxy adds < 150 µs at p50 (closed loop)", "4 connection(s): proxy adds < 150 µs at p50 (paced",
		"L7 req/s ≥ 50 % of L4", "RSS < 64 MiB with 20 idle",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	// The rows of every table, by section.
	sections := map[string][]string{
		"## Through the datapath, closed loop": {"| 1 | L4 |", "| 1 | L7 |", "| 4 | L4 |", "| 4 | L7 |"},
		"## Through the datapath, paced":       {"| 4 | L4 |", "| 4 | L7 |"},
		"## Loopback, for reading the above":   {"| 1 | loopback direct |", "| 1 | loopback proxy |", "| 4 | loopback direct |", "| 4 | loopback proxy |"},
	}
	for head, rows := range sections {
		_, sec, ok := strings.Cut(md, head+"\n")
		if !ok {
			t.Errorf("report lacks section %q", head)
			continue
		}
		sec, _, _ = strings.Cut(sec, "\n## ")
		for _, row := range rows {
			if !strings.Contains(sec, row) {
				t.Errorf("section %q lacks row %q:\n%s", head, row, sec)
			}
		}
	}
	rows := 0
	for _, line := range strings.Split(md, "\n") {
		f := strings.Split(line, "|")
		if len(f) < 14 {
			continue
		}
		path := strings.TrimSpace(f[2])
		if !slices.Contains([]string{pathL4, pathL7, pathDirect, pathProxy}, path) {
			continue
		}
		rows++
		if errs := strings.TrimSpace(f[6]); errs != "0" {
			t.Errorf("errors in %q", line)
		}
		if rate := strings.TrimSpace(f[3]); rate == "0" {
			t.Errorf("no requests in %q", line)
		}
		perReq := strings.TrimSpace(f[13])
		if proxied(path) == (perReq == "–") {
			t.Errorf("proxy CPU / request %q on path %s: want a number exactly on proxied paths", perReq, path)
		}
		// The proxy idles on the other paths: at most a stray clock tick
		// (5 % of a 200 ms point) while it closes the last point's
		// connections.
		proxyCPU, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(f[9]), " %"))
		if err != nil || !proxied(path) && proxyCPU >= 10 {
			t.Errorf("proxy CPU %q (%v) during %q", f[9], err, line)
		}
	}
	if rows != 10 {
		t.Errorf("%d request rows, want 10:\n%s", rows, md)
	}
}
