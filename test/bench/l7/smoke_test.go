package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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

// TestSmoke runs the whole harness with tiny settings and checks that the
// report is complete and that every request succeeded through the proxy.
// It checks no performance number: a benchmark is not a test.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes and moves traffic for a few seconds")
	}
	out := t.TempDir()
	cfg := config{out: out, duration: 200 * time.Millisecond, reps: 1, conns: []int{1, 4}, idle: 20}
	if err := run(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(out, "l7.md"))
	if err != nil {
		t.Fatal(err)
	}
	md := string(b)
	for _, want := range []string{
		"| 1 | direct |", "| 1 | proxy |", "| 4 | direct |", "| 4 | proxy |",
		"proxy adds < 150 µs at p50", "RSS < 64 MiB with 20 idle",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	for _, line := range strings.Split(md, "\n") {
		if f := strings.Split(line, "|"); len(f) > 7 && (strings.TrimSpace(f[2]) == "proxy" || strings.TrimSpace(f[2]) == "direct") {
			if errs := strings.TrimSpace(f[6]); errs != "0" {
				t.Errorf("errors in %q", line)
			}
			if rate := strings.TrimSpace(f[3]); rate == "0" {
				t.Errorf("no requests in %q", line)
			}
		}
	}
}
