package main

import (
	"math"
	"testing"
	"time"

	"github.com/fastpath-net/fastpath/test/bench/internal/loadgen"
	"github.com/fastpath-net/fastpath/test/bench/internal/netstat"
)

func testPaths(names ...string) []clientPath {
	var out []clientPath
	for _, n := range names {
		out = append(out, clientPath{name: n})
	}
	return out
}

var testData = dataConfig{Workers: []int{1, 4}, Window: time.Second, LatWindow: 500 * time.Millisecond, StreamWindow: time.Second}

// TestRoundRuns: in every round every kind of load runs on every path; for
// new connections each baseline pair is one ABBA block (BAAB in even
// rounds) of half-window legs, kube-proxy's paths one whole window each,
// the measured time of a kind is what it was (a window per path), and
// each unit leads a round once in as many rounds as there are units.
func TestRoundRuns(t *testing.T) {
	paths := testPaths(pathNames...)
	kinds := loadKinds(testData)
	baseOfPair := map[string]string{pathTC: pathDirect, pathSock: pathDirectNode}
	lead := map[string]int{}
	for rep := 1; rep <= 4; rep++ {
		runs := roundRuns(rep, paths, kinds)
		i := 0
		for _, k := range kinds {
			var group []roundRun
			for ; i < len(runs) && runs[i].load.kind == k.kind && runs[i].load.workers == k.workers; i++ {
				group = append(group, runs[i])
			}
			var total time.Duration
			seen := map[string]int{}
			for _, r := range group {
				seen[r.path.name]++
				total += r.load.window
			}
			for _, p := range pathNames {
				if want := 1 + boolInt(k.kind == loadgen.KindConn && p != pathIPT && p != pathNFT); seen[p] != want {
					t.Errorf("round %d %s w=%d: %s runs %d times, want %d", rep, k.kind, k.workers, p, seen[p], want)
				}
			}
			if want := time.Duration(len(pathNames)) * k.window; total != want {
				t.Errorf("round %d %s w=%d: %s measured, want %s", rep, k.kind, k.workers, total, want)
			}
			if k.kind != loadgen.KindConn {
				for _, r := range group {
					if r.leg != 0 || r.load != k {
						t.Errorf("round %d %s: %s leg %d window %s", rep, k.kind, r.path.name, r.leg, r.load.window)
					}
				}
				continue
			}
			lead[group[0].path.name]++
			for j := 0; j < len(group); {
				r := group[j]
				if r.path.name == pathIPT || r.path.name == pathNFT {
					if r.leg != 0 || r.load.window != k.window {
						t.Errorf("round %d: %s leg %d window %s, want one whole window", rep, r.path.name, r.leg, r.load.window)
					}
					j++
					continue
				}
				if j+4 > len(group) {
					t.Fatalf("round %d: block at %d cut short", rep, j)
				}
				a, b, c, d := group[j], group[j+1], group[j+2], group[j+3]
				if a.path.name != d.path.name || b.path.name != c.path.name || a.path.name == b.path.name {
					t.Fatalf("round %d: %s %s %s %s is not ABBA", rep, a.path.name, b.path.name, c.path.name, d.path.name)
				}
				base, x := a.path.name, b.path.name
				if rep%2 == 0 {
					base, x = x, base
				}
				if baseOfPair[x] != base {
					t.Errorf("round %d: block %s %s %s %s, want the baseline %s first in odd rounds, last in even ones",
						rep, a.path.name, b.path.name, c.path.name, d.path.name, baseOfPair[x])
				}
				for l, r := range []roundRun{a, b, c, d} {
					if want := []int{1, 1, 2, 2}[l]; r.leg != want || r.load.window != k.window/2 {
						t.Errorf("round %d: %s leg %d window %s, want leg %d of %s", rep, r.path.name, r.leg, r.load.window, want, k.window/2)
					}
				}
				j += 4
			}
		}
		if i != len(runs) {
			t.Errorf("round %d: %d runs of no kind", rep, len(runs)-i)
		}
	}
	// Units: two blocks (led by either of its paths) and two lone paths.
	for _, pair := range connPairs {
		if n := lead[pair[0]] + lead[pair[1]]; n != len(testData.Workers) {
			t.Errorf("the %s block leads %d rounds, want one per worker count: %v", pair[1], n, lead)
		}
	}
	for _, p := range []string{pathIPT, pathNFT} {
		if lead[p] != len(testData.Workers) {
			t.Errorf("%s leads %d rounds, want one per worker count: %v", p, lead[p], lead)
		}
	}

	// A path whose baseline is missing runs one whole window.
	runs := roundRuns(1, testPaths(pathTC, pathDirectNode, pathSock, pathIPT), loadKinds(dataConfig{Workers: []int{1}, Window: time.Second}))
	var names []string
	for _, r := range runs[:6] {
		names = append(names, r.path.name)
	}
	if runs[0].path.name != pathTC || runs[0].leg != 0 || runs[0].load.window != time.Second ||
		runs[1].path.name != pathDirectNode || runs[2].path.name != pathSock || runs[5].path.name != pathIPT {
		t.Errorf("tc without direct: %v", names)
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestPoolLegsDrift: with the machine slowing down linearly over a round,
// the ratio from pooled legs is the paths' true ratio, in ABBA and BAAB
// rounds alike; the ratio of single legs is not (the drift is real).
func TestPoolLegsDrift(t *testing.T) {
	const warmup = 200 * time.Millisecond
	// Rates high enough that whole operations round the ratio by < 1e-6.
	truth := map[string]float64{pathDirect: 20e6, pathTC: 18e6, pathDirectNode: 22e6, pathSock: 21e6, pathIPT: 15e6, pathNFT: 16e6}
	speed := func(sec float64) float64 { return 1 - 0.05*sec } // 5 % slower each second
	kinds := loadKinds(dataConfig{Workers: []int{1}, Window: time.Second})[:1]
	res := &results{}
	var clock time.Duration
	for rep := 1; rep <= 2; rep++ {
		for _, r := range roundRuns(rep, testPaths(pathNames...), kinds) {
			clock += warmup
			mid := (clock + r.load.window/2).Seconds()
			ops := truth[r.path.name] * speed(mid) * r.load.window.Seconds() // exact for a linear speed
			res.Data = append(res.Data, dataPoint{N: 100, Path: r.path.name, Kind: loadgen.KindConn, Workers: 1, Rep: rep, Leg: r.leg,
				Window: r.load.window, Ops: uint64(math.Round(ops)), Rate: ops / r.load.window.Seconds()})
			clock += r.load.window
		}
	}
	p := pooled(res)
	for _, path := range []string{pathTC, pathSock} {
		want := truth[path] / truth[baseOf(path)]
		got := vsDirect(p, 100, path, 1)
		if got.N != 2 || math.Abs(got.Min-want) > 1e-6 || math.Abs(got.Max-want) > 1e-6 {
			t.Errorf("%s vs %s: %+v, want %.4f in both rounds", path, baseOf(path), got, want)
		}
		// Without pooling (the first legs alone) the drift shows.
		first := map[string]float64{}
		for _, d := range res.Data {
			if d.Rep == 1 && d.Leg == 1 {
				first[d.Path] = d.Rate
			}
		}
		if r := first[path] / first[baseOf(path)]; math.Abs(r-want) < 0.01 {
			t.Errorf("%s: first legs' ratio %.4f is already %.4f: the drift is too weak to test", path, r, want)
		}
	}
	// Every pooled round is one point of a whole window.
	for _, d := range p.Data {
		if d.Leg != 0 || d.Window != time.Second {
			t.Errorf("pooled %s round %d: leg %d window %s", d.Path, d.Rep, d.Leg, d.Window)
		}
	}
	if len(p.Data) != 2*len(pathNames) {
		t.Errorf("%d pooled points, want %d", len(p.Data), 2*len(pathNames))
	}
}

// TestPoolLegs: two legs make one round, as one run of both windows.
func TestPoolLegs(t *testing.T) {
	leg := func(l int, ops uint64, p50 float64, syn uint64) dataPoint {
		w := 500 * time.Millisecond
		return dataPoint{N: 1, Path: pathTC, Kind: loadgen.KindConn, Workers: 1, Rep: 3, Leg: l, Window: w, Ops: ops, Errors: syn,
			Rate: float64(ops) / w.Seconds(), P50: p50, P99: 2 * p50, Max: 1000 * float64(l), ClientCPU: 40 + float64(l)*10, ClientUser: 10,
			TCP: map[string]uint64{netstat.SynRetrans: syn}}
	}
	lat := dataPoint{N: 1, Path: pathTC, Kind: loadgen.KindLatency, Workers: 1, Rep: 3, Rate: 7}
	first := leg(1, 1000, 100, 1)
	got := poolLegs([]dataPoint{first, lat, leg(2, 3000, 200, 2)})
	if len(got) != 2 || got[1].Kind != loadgen.KindLatency || got[1].Rate != 7 {
		t.Fatalf("pooled: %+v", got)
	}
	p := got[0]
	if p.Leg != 0 || p.Ops != 4000 || p.Errors != 3 || p.Window != time.Second || p.Rate != 4000 || p.TCP[netstat.SynRetrans] != 3 || p.Max != 2000 {
		t.Errorf("pooled point: %+v", p)
	}
	if first.TCP[netstat.SynRetrans] != 1 {
		t.Error("pooling changed the raw leg's TCP counters")
	}
	if math.Abs(p.P50-175) > 1e-9 || math.Abs(p.P99-350) > 1e-9 || p.ClientCPU != 55 || p.ClientUser != 10 {
		t.Errorf("p50 %v p99 %v (want 175, 350: weighted by connections), client CPU %v (want 55), user %v (want 10)", p.P50, p.P99, p.ClientCPU, p.ClientUser)
	}
	failed := leg(2, 0, 0, 0)
	failed.Err = "boom"
	if got := poolLegs([]dataPoint{leg(1, 1000, 100, 1), failed}); len(got) != 1 || got[0].Err != "boom" {
		t.Errorf("a failed leg must fail its round: %+v", got)
	}
	unread := leg(2, 1000, 100, 1)
	unread.TCP = nil
	if got := poolLegs([]dataPoint{leg(1, 1000, 100, 1), unread}); got[0].TCP != nil {
		t.Errorf("a leg without TCP counters leaves the round's unknown: %v", got[0].TCP)
	}
}

// TestRoundsTime: the data rounds of the full run and of -quick fit their
// share of the budgets (full run < 60 min, -quick < 10 min; the control
// path and the Services' creation take the rest). The ABBA legs add a
// warm-up and a start per extra run: 4 per round and worker count, the
// measured windows stay one per path.
func TestRoundsTime(t *testing.T) {
	paths := testPaths(pathNames...)
	for _, c := range []struct {
		args  []string
		limit time.Duration
	}{{[]string{"-headline"}, 16 * time.Minute}, {[]string{"-headline", "-quick"}, 4 * time.Minute}} {
		cfg, err := parseFlags(c.args)
		if err != nil {
			t.Fatal(err)
		}
		got := time.Duration(len(cfg.Ns)) * roundsTime(cfg.Data, paths)
		t.Logf("%v: data rounds about %s", c.args, got.Round(time.Second))
		if got > c.limit {
			t.Errorf("%v: data rounds take about %s, want under %s", c.args, got.Round(time.Second), c.limit)
		}
		one := cfg.Data
		one.Workers = []int{1}
		run := one.Warmup + runOverhead
		if got, want := roundsTime(one, paths), time.Duration(one.Reps)*(22*run+6*(one.Window+one.LatWindow+one.StreamWindow)); got != want {
			t.Errorf("%v: one worker's rounds %s, want %s (10 new-connection runs, 6 each of requests and stream)", c.args, got, want)
		}
	}
}
