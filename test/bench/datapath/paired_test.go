package main

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/fastpath-net/fastpath/internal/testpriv"
	"github.com/fastpath-net/fastpath/test/bench/internal/benchmain"
	"github.com/fastpath-net/fastpath/test/internal/testbin"
)

// TestPaired runs the side-by-side phase with N=1 and N=10 against real
// agents, one per count on a node of its own: every leg at both counts must
// carry connections, each node's agent must have programmed its count
// (else the harness fails), both nodes and everything they attached must
// be gone afterwards, and the report must have the section and the budget
// row from it. No rate is judged. The -paired-hot diagnostic (one agent
// serving N=10 to both counts' legs) must carry every leg too, and its
// report say what it is.
func TestPaired(t *testing.T) {
	t.Run("nodes", func(t *testing.T) { checkPaired(t, false) })
	t.Run("hot", func(t *testing.T) { checkPaired(t, true) })
}

func checkPaired(t *testing.T, hot bool) {
	if testing.Short() {
		t.Skip("runs the agent and traffic (root, BPF, namespaces)")
	}
	testpriv.Require(t)
	if _, err := exec.LookPath("go"); err != nil {
		testpriv.Unavailable(t, "the go command is needed to build fastpath-agent")
	}
	cfg := defaultConfig()
	cfg.Ns, cfg.Workers, cfg.Reps, cfg.PairedReps = []int{1, 10}, []int{1}, 2, 2
	cfg.PairedHot, cfg.SwapWait = hot, 0
	cfg.Duration, cfg.Warmup = 300*time.Millisecond, 30*time.Millisecond
	cfg.Log = benchmain.TestLog(t)
	id := randomID()
	env, err := newEnv(cfg.Log, id)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := env.close(); err != nil {
			t.Error(err)
		}
		assertCleanedUp(t, "fp-bench-"+id)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin, err := testbin.Build(ctx, env.tmp)
	if err != nil {
		t.Fatal(err)
	}
	pts, warns, err := benchPaired(ctx, cfg, env, bin)
	if err != nil {
		t.Fatal(err)
	}
	// A few hundred connections give an agent nothing to warn about.
	if len(warns) > 0 {
		t.Errorf("the agent warned:\n%s", strings.Join(warns, "\n"))
	}
	type key struct {
		n        int
		mode     string
		rep, leg int
	}
	got := map[key]point{}
	for _, p := range pts {
		if p.Kind != kindPaired || p.Err != "" || p.Rate <= 0 {
			t.Errorf("point %s N=%d rep %d leg %d: kind %q, rate %v, error %q", p.Mode, p.N, p.Rep, p.Leg, p.Kind, p.Rate, p.Err)
		}
		got[key{p.N, p.Mode, p.Rep, p.Leg}] = p
	}
	for _, n := range cfg.Ns {
		for _, m := range []string{"tc", "sock"} {
			for rep := 1; rep <= cfg.PairedReps; rep++ {
				for leg := 1; leg <= 2; leg++ {
					if _, ok := got[key{n, m, rep, leg}]; !ok {
						t.Errorf("no leg %d of %s at N=%d in repetition %d", leg, m, n, rep)
					}
				}
			}
		}
	}
	if len(pts) != len(got) {
		t.Errorf("%d points, %d distinct", len(pts), len(got))
	}
	md := markdown(&results{Cfg: cfg, Points: pts, Machine: machine{}})
	for _, want := range []string{"## N=1 and N=10 side by side", "| tc | 1 |", "| sock | 1 |",
		"tc: rate at N=10 ≥ 95 % of rate at N=1 | side by side, per repetition: "} {
		if hot && want == "## N=1 and N=10 side by side" {
			want = "**Diagnostic run (-paired-hot)**"
		}
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("report:\n%s", md)
	}
}

func TestPairedHalves(t *testing.T) {
	for _, c := range []struct {
		reps, envs int
		want       string
	}{
		{12, 2, "[[1 2 3 4 5 6] [7 8 9 10 11 12]]"},
		{3, 2, "[[1 2] [3]]"},
		{1, 2, "[[1] []]"},
		{4, 1, "[[1 2 3 4]]"},
	} {
		if got := fmt.Sprint(pairedHalves(c.reps, c.envs)); got != c.want {
			t.Errorf("pairedHalves(%d, %d) = %s; want %s", c.reps, c.envs, got, c.want)
		}
	}
}
