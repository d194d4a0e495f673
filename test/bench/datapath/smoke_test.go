package main

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fastpath-net/fastpath/internal/testpriv"
	"github.com/fastpath-net/fastpath/test/bench/internal/benchmain"
	"github.com/fastpath-net/fastpath/test/bench/internal/loadgen"
)

// TestMain lets the test binary act as the load generator, which the
// harness starts as a child process of itself.
func TestMain(m *testing.M) {
	if loadgen.IsChild() {
		os.Exit(loadgen.Main())
	}
	os.Exit(m.Run())
}

// TestSmoke runs the whole harness in-process with tiny settings and checks
// that it produces well-formed output with every mode in it. It checks no
// performance number: a benchmark is not a test. It takes about 10 s when
// the build cache holds the agent's packages (make test builds first); the
// harness builds fastpath-agent from this tree, so a cold cache adds the
// compile time.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the datapath benchmark harness end to end (root, BPF, namespaces)")
	}
	testpriv.Require(t)
	if _, err := exec.LookPath("go"); err != nil {
		testpriv.Unavailable(t, "the go command is needed to build fastpath-agent")
	}
	out := t.TempDir()
	cfg := defaultConfig()
	cfg.Out = out
	cfg.Ns = []int{10}
	cfg.Workers = []int{1, 2}
	cfg.Duration = 300 * time.Millisecond
	cfg.LatDuration = 150 * time.Millisecond
	cfg.Warmup = 30 * time.Millisecond
	cfg.Reps = 1
	cfg.Pool = 4
	cfg.UpdateOps = 20
	cfg.ProgRuns = 200
	cfg.Command = "go test ./test/bench/datapath -run TestSmoke"
	cfg.Log = benchmain.TestLog(t)
	cfg.ID = randomID()
	cfg.WaitIdle = 0

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	if err := run(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	t.Logf("harness ran in %s", time.Since(start).Round(time.Millisecond))

	rates := readRates(t, out)
	for _, m := range modes {
		for _, kind := range []string{loadgen.KindConn, loadgen.KindLatency} {
			for _, w := range cfg.Workers {
				key := m.Name + "/" + kind + "/" + strconv.Itoa(w)
				r, ok := rates[key]
				if !ok {
					t.Errorf("datapath-traffic.csv has no rate for %s", key)
				} else if r <= 0 {
					t.Errorf("datapath-traffic.csv: rate of %s is %v, want > 0", key, r)
				}
			}
		}
	}

	md, err := os.ReadFile(filepath.Join(out, "datapath.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## Budget", "## New connections", "## Requests on kept-alive connections",
		"## Map updates", "## Agent start-up and memory", "| target | measured | status |", "reconciler add", "raw map update",
		"## fp_tc_lb per packet", "tc − direct per connection |", "## fp_tc_lb in traffic"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("datapath.md lacks %q", want)
		}
	}
	for _, m := range modes {
		if !strings.Contains(string(md), "| "+m.Name+" |") {
			t.Errorf("datapath.md has no row for mode %s", m.Name)
		}
	}
	checkInTraffic(t, string(md), cfg.Workers)
	if t.Failed() {
		t.Logf("datapath.md:\n%s", md)
	}
	assertCleanedUp(t, "fp-bench-"+cfg.ID)
}

// readRates returns the traffic rates of datapath-traffic.csv by
// mode/kind/workers, checking that every row has the header's shape and
// numbers, and that datapath.csv has the other sections, long.
func readRates(t *testing.T, dir string) map[string]float64 {
	t.Helper()
	rows := benchmain.ReadCSV(t, filepath.Join(dir, "datapath-traffic.csv"))
	if len(rows) < 2 || strings.Join(rows[0][:len(trafficKey)], ",") != strings.Join(trafficKey, ",") {
		t.Fatalf("datapath-traffic.csv: header %v, want %v first", rows[0], trafficKey)
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[h] = i
	}
	rate, ok := col["rate[1/s]"]
	if !ok {
		t.Fatalf("datapath-traffic.csv: no rate[1/s] column in %v", rows[0])
	}
	rates := map[string]float64{}
	for i, r := range rows[1:] {
		for c, v := range r[len(trafficKey):] {
			if _, err := strconv.ParseFloat(v, 64); err != nil && v != "" {
				t.Fatalf("datapath-traffic.csv row %d: %s %q is not a number", i+2, rows[0][len(trafficKey)+c], v)
			}
		}
		// New connections run in ABBA legs, requests in one window.
		if leg, kind := r[col["leg"]], r[col["kind"]]; (kind == loadgen.KindConn) != (leg == "1" || leg == "2") || (kind != loadgen.KindConn && leg != "") {
			t.Errorf("datapath-traffic.csv row %d: %s point with leg %q", i+2, kind, leg)
		}
		v, _ := strconv.ParseFloat(r[rate], 64)
		rates[r[col["mode"]]+"/"+r[col["kind"]]+"/"+r[col["workers"]]] = v
	}
	rows = benchmain.ReadCSV(t, filepath.Join(dir, "datapath.csv"))
	if len(rows) < 2 || strings.Join(rows[0], ",") != strings.Join(csvHeader, ",") {
		t.Fatalf("datapath.csv: header %v, want %v", rows[0], csvHeader)
	}
	sections := map[string]bool{}
	value := slices.Index(csvHeader, "value")
	for i, r := range rows[1:] {
		if _, err := strconv.ParseFloat(r[value], 64); err != nil {
			t.Fatalf("datapath.csv row %d: value %q is not a number", i+2, r[value])
		}
		sections[r[0]] = true
	}
	for _, s := range []string{"agent", "update", "progcost"} {
		if !sections[s] {
			t.Errorf("datapath.csv has no %s rows", s)
		}
	}
	return rates
}

// assertCleanedUp checks that no namespace, pin directory or cgroup of the
// run (names starting with prefix) is left behind.
func assertCleanedUp(t *testing.T, prefix string) {
	t.Helper()
	for _, dir := range []string{"/run/netns", bpfRoot, cgroupRoot} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), prefix) {
				t.Errorf("left behind: %s", filepath.Join(dir, e.Name()))
			}
		}
	}
}

// TestProgCost runs the per-packet cost measurement with few services and
// frames: each kind's frames must take the path it is named for (the
// harness checks the datapath counters and verdicts itself) and every run
// must be timed. No duration is checked.
func TestProgCost(t *testing.T) {
	testpriv.Require(t)
	pin := filepath.Join(bpfRoot, "fp-bench-progcost-"+randomID())
	t.Cleanup(func() {
		if err := os.RemoveAll(pin); err != nil {
			t.Error(err)
		}
	})
	backends := []netip.AddrPort{netip.MustParseAddrPort("10.0.1.5:8080"), netip.MustParseAddrPort("10.0.2.6:8081")}
	const runs = 300
	res, err := benchProgCost(context.Background(), pin, []int{1, 50}, runs, backends)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || res[0].N != 1 || res[1].N != 50 {
		t.Fatalf("results for %v, want N=1 and N=50", res)
	}
	for _, pc := range res {
		for k, kind := range progKinds {
			if len(pc.Kinds[k].Samples) != runs {
				t.Errorf("N=%d %s: %d runs timed, want %d", pc.N, kind.Name, len(pc.Kinds[k].Samples), runs)
			}
			t.Logf("N=%d %s: median %v", pc.N, kind.Name, pc.Kinds[k].quantile(0.5))
		}
		if len(pc.Repeated.Samples) == 0 {
			t.Errorf("N=%d: no repeated runs", pc.N)
		}
	}
}

// inTrafficRow is a row of the in-traffic table at N=10: workers, then
// packets per connection and time per packet of direct and of tc.
var inTrafficRow = regexp.MustCompile(`(?m)^\| 10 \| (\d+) \| [\d,]+ \| ([\d.]+) \| (\d+) ns \| [\d.]+ µs \| ([\d.]+) \| (\d+) ns \|`)

// checkInTraffic wants a measured row per worker count in which every
// connection crossed the program a TCP connection's packets' worth of
// times (handshake, request, answer, close: at least 5) in both modes.
func checkInTraffic(t *testing.T, md string, workers []int) {
	t.Helper()
	rows := inTrafficRow.FindAllStringSubmatch(md, -1)
	if len(rows) != len(workers) {
		t.Errorf("in-traffic table: %d measured rows at N=10, want %d (one per worker count)", len(rows), len(workers))
	}
	for _, r := range rows {
		for _, c := range []int{2, 4} {
			if v, err := strconv.ParseFloat(r[c], 64); err != nil || v < 5 {
				t.Errorf("in-traffic row %q: %s packets per connection, want >= 5", r[0], r[c])
			}
		}
		for _, c := range []int{3, 5} {
			if v, err := strconv.Atoi(r[c]); err != nil || v <= 0 {
				t.Errorf("in-traffic row %q: %s ns per packet, want > 0", r[0], r[c])
			}
		}
	}
}
