package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/fastpath-net/fastpath/internal/agent"
)

func TestMonitorFlags(t *testing.T) {
	base := []string{"--services-file", "/dev/null"}
	cfg, _, err := parseFlags(base, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	want := agent.Monitor{AllowSample: agent.DefaultAllowSample, DropsPerSec: agent.DefaultDropsPerSec, Addr: agent.DefaultMonitorAddr}
	if cfg.Monitor != want {
		t.Fatalf("defaults %+v, want %+v", cfg.Monitor, want)
	}
	cfg, _, err = parseFlags(append(base, "--monitor-allow-sample=7", "--monitor-drops-per-sec=0", "--monitor-addr="), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if want := (agent.Monitor{AllowSample: 7}); cfg.Monitor != want {
		t.Fatalf("set %+v, want %+v", cfg.Monitor, want)
	}
	_, _, err = parseFlags(append(base, "--monitor-allow-sample=-1"), &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "monitor-allow-sample") {
		t.Fatalf("negative sample: error %v, want one naming the flag", err)
	}
}
