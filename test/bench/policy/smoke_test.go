package main

import (
	"context"
	"encoding/csv"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fastpath-net/fastpath/internal/lab"
	"github.com/fastpath-net/fastpath/internal/testenv"
	"github.com/fastpath-net/fastpath/internal/testpriv"
)

// TestSmoke runs the whole harness with a tiny cluster (two nodes, 20
// pods, 6 policies, one change of each kind, short rate windows) so that
// it cannot rot, and checks that the report has every measurement and the
// lab is gone afterwards. It checks no time: a benchmark is not a test.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the policy benchmark harness on a real lab (root, BPF, a control plane)")
	}
	testpriv.Require(t)
	if _, err := testenv.BinDir(); err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("go"); err != nil {
		testpriv.Unavailable(t, "the go command is needed to build the agent and the lab")
	}
	out := t.TempDir()
	cfg := defaultConfig()
	cfg.Out, cfg.Pods, cfg.Namespaces, cfg.Policies, cfg.Changes = out, 20, 3, 6, 1
	cfg.RateWindow, cfg.RateReps, cfg.Gap = 200*time.Millisecond, 1, 0
	cfg.Command = "go test ./test/bench/policy -run TestSmoke"
	cfg.ID = fmt.Sprintf("pt%d", os.Getpid())
	cfg.Log = t.Output()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := run(ctx, cfg); err != nil {
		t.Fatal(err)
	}

	f, err := os.Open(filepath.Join(out, "policy.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatalf("policy.csv is not well-formed: %v", err)
	}
	have := map[string]bool{}
	for _, r := range rows[1:] {
		if len(r) != 5 {
			t.Fatalf("policy.csv row %v: want 5 columns", r)
		}
		if _, err := strconv.ParseFloat(r[3], 64); err != nil {
			t.Errorf("policy.csv row %v: value is no number", r)
		}
		have[r[0]+"/"+r[1]] = true
	}
	wants := []string{"change_open/" + kindPolicyAdd, "change_close/" + kindPolicyDelete, "change_open/" + kindPolicyUpdate,
		"change_close/" + kindPolicyUpdate, "change_open/" + kindPodLabel, "change_open/" + kindNSLabel, "change_open/" + kindBulkLabel,
		"cold_cpu/node1", "cold_cpu/node2", "bulk_cpu/node1", "bulk_cpu/node2",
		"conn_rate/web pod selected by 1 policies", fmt.Sprintf("conn_rate/web pod selected by %d policies", cfg.Policies)}
	for _, w := range wants {
		if !have[w] {
			t.Errorf("policy.csv has no %s row", w)
		}
	}
	md, err := os.ReadFile(filepath.Join(out, "policy.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"## Change latency", "## Agent CPU for the full computation", "## Per-packet lookup", "Load average"} {
		if !strings.Contains(string(md), w) {
			t.Errorf("policy.md lacks %q", w)
		}
	}
	if t.Failed() {
		t.Logf("policy.md:\n%s", md)
	}
	// run took the lab down.
	if _, err := os.Stat(lab.StateDir); !os.IsNotExist(err) {
		t.Errorf("%s still exists after the run (%v)", lab.StateDir, err)
	}
	if b, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(b), lab.Base+"-") {
		t.Errorf("namespaces of %s left after the run:\n%s", lab.Base, b)
	}
}
