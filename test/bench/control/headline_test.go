package main

import (
	"bytes"
	"context"
	"image/png"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fastpath-net/fastpath/internal/testenv"
	"github.com/fastpath-net/fastpath/internal/testpriv"
	"github.com/fastpath-net/fastpath/test/bench/internal/benchmain"
	"github.com/fastpath-net/fastpath/test/bench/internal/loadgen"
	"github.com/fastpath-net/fastpath/test/bench/internal/netstat"
)

// TestMain lets the test binary act as the load generator, which the
// harness starts as a child process of itself.
func TestMain(m *testing.M) {
	if loadgen.IsChild() {
		os.Exit(loadgen.Main())
	}
	os.Exit(m.Run())
}

// TestHeadlineSmoke runs `make bench`'s harness end to end with N=4 and
// N=10, two changes and one short round, and checks the output's shape:
// every contender and path measured, the side-by-side phase of N=4 and
// N=10 run and reported, every chart a small PNG. It checks no number: a
// benchmark is not a test. About two minutes (the control plane, three
// proxies twice, the side node and building fastpath-agent).
func TestHeadlineSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the headline benchmark end to end (root, BPF, namespaces, a control plane)")
	}
	testpriv.Require(t)
	if _, err := testenv.Binary("kube-proxy"); err != nil {
		testpriv.Unavailable(t, "kube-proxy: "+err.Error()+" (make k8s-tools, or FASTPATH_K8S_BIN)")
	}
	for _, tool := range []string{"go", "iptables-restore", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			testpriv.Unavailable(t, tool+" is needed")
		}
	}
	cfg, err := parseFlags([]string{"-headline", "-n", "4,10", "-changes", "2", "-gap", "100ms", "-idle", "200ms",
		"-reps", "1", "-paired-reps", "1", "-window", "150ms", "-latency-window", "100ms", "-stream-window", "100ms", "-warmup", "20ms", "-pool", "2",
		"-workers", "1,2", "-out", t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Log = benchmain.TestLog(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := run(ctx, cfg); err != nil {
		t.Fatal(err)
	}

	md, err := os.ReadFile(filepath.Join(cfg.Out, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## Claims", "## New connections per second", "## Cost", "kube-proxy nftables", "fastpath socket LB"} {
		if !bytes.Contains(md, []byte(want)) {
			t.Errorf("README.md lacks %q", want)
		}
	}
	if bytes.Contains(md, []byte("FAILED")) || bytes.Contains(md, []byte("%!")) {
		t.Errorf("README.md reports a failure or a formatting error:\n%s", md)
	}

	if !bytes.Contains(md, []byte("SYNs sent again / SYNs refused by a TIME_WAIT")) {
		t.Error("README.md lacks the SYN retransmission and TIME_WAIT refusal tables")
	}
	// fastpath's counters, and its connection tracking read for clash ports.
	if !regexp.MustCompile(`(?m)^\| 10 \| .*forward_new \d+.* \| \d+ \|$`).Match(md) {
		t.Error("README.md lacks fastpath's counters and clash ports at N=10")
	}
	rows := benchmain.ReadCSV(t, filepath.Join(cfg.Out, dataCSV))
	seen := map[string]int{}
	tcpCol, legCol := slices.Index(rows[0], "syn_retrans"), slices.Index(rows[0], "leg")
	legs := map[string]string{}   // N, conn path and workers: its legs in order
	paired := map[string]string{} // the same of the side-by-side phase
	for _, r := range rows[1:] {
		if r[len(r)-1] != "" {
			t.Errorf("data point failed: %v", r)
		}
		seen[r[1]+" "+r[2]]++
		switch {
		case r[2] == loadgen.KindConn && r[4] != "0":
			legs[r[0]+" "+r[1]+" w="+r[3]] += r[legCol]
		case r[2] == kindPaired:
			paired[r[0]+" "+r[1]+" w="+r[3]] += r[legCol]
		case r[legCol] != "0":
			t.Errorf("leg %s of a lone window: %v", r[legCol], r)
		}
		// Every round read the TCP counters: a number, 0 included.
		for _, v := range r[tcpCol : tcpCol+3] {
			if _, err := strconv.ParseUint(v, 10, 64); err != nil {
				t.Errorf("TCP counters not read: %v", r)
				break
			}
		}
	}
	for _, path := range pathNames {
		for _, k := range loadKinds(cfg.Data) {
			if seen[path+" "+k.kind] == 0 {
				t.Errorf("no %s point on path %s", k.kind, path)
			}
		}
	}
	// One round: the paths with a baseline pair ran two legs, kube-proxy's
	// one window; the side-by-side phase two legs of TC and sock at each N.
	for _, w := range cfg.Data.Workers {
		for _, n := range cfg.Ns {
			for _, path := range pathNames {
				want := "12"
				if path == pathIPT || path == pathNFT {
					want = "0"
				}
				key := strconv.Itoa(n) + " " + path + " w=" + strconv.Itoa(w)
				if got := legs[key]; got != want {
					t.Errorf("N=%d %s w=%d: legs %q, want %q", n, path, w, got, want)
				}
				if path != pathTC && path != pathSock {
					want = ""
				}
				if got := paired[key]; got != want {
					t.Errorf("side by side: N=%d %s w=%d: legs %q, want %q", n, path, w, got, want)
				}
			}
		}
	}
	for _, want := range []string{"## N=4 and N=10 side by side", "| fastpath TC | 2 | "} {
		if !bytes.Contains(md, []byte(want)) {
			t.Errorf("README.md lacks %q", want)
		}
	}
	if !regexp.MustCompile(`(?m)^\| fastpath socket LB: new connections/s at N=10 ≥ 95 % of N=4 \(1 worker\(s\)\) \| side by side [\d.]+ %( \([\d–]+\))? \(per-N blocks: [\d.]+ %\) \|`).Match(md) {
		t.Error("README.md's claim of N=10 vs N=4 is not the side-by-side ratio")
	}
	costs := benchmain.ReadCSV(t, filepath.Join(cfg.Out, costCSV))
	if len(costs) != 1+len(cfg.Ns)*len(contenderNames) {
		t.Errorf("cost rows: %v", costs)
	}
	for _, c := range costs[1:] {
		if c[8] != "" || (c[3] == "0" && c[5] == "0") {
			t.Errorf("cost of %s not read: %v", c[1], c)
		}
	}
	charts, _ := filepath.Glob(filepath.Join(cfg.Out, "*.png"))
	if len(charts) != len(cfg.Data.Workers)+1 {
		t.Errorf("charts: %v", charts)
	}
	for _, f := range charts {
		checkPNG(t, f)
	}
}

// chartLimit keeps committed charts small.
const chartLimit = 100 << 10

func checkPNG(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > chartLimit {
		t.Errorf("%s: %d bytes, want under %d", path, len(b), chartLimit)
	}
	if _, err := png.Decode(bytes.NewReader(b)); err != nil {
		t.Errorf("%s: %v", path, err)
	}
}

func TestGlyphs(t *testing.T) {
	for r, g := range glyphs {
		if len(g) != 15 || strings.Trim(g, ".#") != "" {
			t.Errorf("glyph %q: %q is not 3x5 of '.' and '#'", r, g)
		}
	}
}

func TestChartPNG(t *testing.T) {
	c := &chart{title: "New TCP connections/s", ylabel: "conn/s", xs: []string{"100", "1,000", "20,000"}, series: []series{
		{name: "direct", key: pathDirect, values: []float64{10000, 9800, 9900}},
		{name: "iptables", key: pathIPT, values: []float64{9000, 7000, math.NaN()}},
	}}
	for _, logY := range []bool{false, true} {
		c.logY = logY
		b, err := c.png()
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if img.Bounds().Dx() != chartW || len(b) > chartLimit {
			t.Fatalf("log %v: %v, %d bytes", logY, img.Bounds(), len(b))
		}
	}
}

func TestCountRules(t *testing.T) {
	ipt := "*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -d 10.96.0.10/32 -j KUBE-SVC-X\n-A KUBE-SVC-X -j KUBE-SEP-Y\nCOMMIT\n"
	if got := countRules("iptables", []byte(ipt)); got != 2 {
		t.Errorf("iptables: %d rules, want 2", got)
	}
	nft := `table ip kube-proxy {
	map service-ips {
		type ipv4_addr . inet_proto . inet_service : verdict
		elements = { 10.96.0.10 . tcp . 80 : goto service-a,
			     10.96.0.11 . tcp . 80 : goto service-b }
	}
	chain services {
		ip daddr . meta l4proto . th dport vmap @service-ips
	}
	chain service-a {
		type nat hook prerouting priority dstnat; policy accept;
		numgen random mod 2 vmap { 0 : goto ep-1, 1 : goto ep-2 }
		jump mark-for-masquerade
	}
}
`
	// 2 map elements, 1 rule in services, 2 rules in service-a.
	if got := countRules("nftables", []byte(nft)); got != 5 {
		t.Errorf("nftables: %d rules, want 5", got)
	}
}

func TestHeadlineFlags(t *testing.T) {
	cfg, err := parseFlags([]string{"-headline"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{100, 1000, 5000, 10000, 20000}; !slices.Equal(cfg.Ns, want) || cfg.Data.Reps != 5 || cfg.Data.PairedReps != 12 {
		t.Errorf("headline: N %v reps %d", cfg.Ns, cfg.Data.Reps)
	}
	if cfg, err = parseFlags([]string{"-headline", "-quick"}); err != nil || !slices.Equal(cfg.Ns, []int{100, 1000, 5000}) || cfg.Data.Reps != 3 {
		t.Errorf("headline quick: %+v %v", cfg, err)
	}
	if _, err := parseFlags([]string{"-headline", "-contenders", "fastpath"}); err == nil {
		t.Error("-headline with a subset of contenders: no error")
	}
}

// TestSynColumns: the TCP counters of the rounds reach headline-data.csv
// and, as medians and highest per round, the README's table; a round
// without them is an empty cell, not a 0.
func TestSynColumns(t *testing.T) {
	cfg := defaultConfig()
	cfg.Headline, cfg.Ns, cfg.Data.Workers = true, []int{100, 1000}, []int{1}
	res := &results{Cfg: cfg}
	for i, v := range []uint64{2, 4, 9} {
		res.Data = append(res.Data, dataPoint{N: 100, Path: pathTC, Kind: loadgen.KindConn, Workers: 1, Rep: i + 1, Rate: 1000,
			TCP: map[string]uint64{netstat.SynRetrans: v, netstat.PAWSTimewait: v - 1, netstat.TWRecycled: 0}})
	}
	res.Data = append(res.Data, dataPoint{N: 1000, Path: pathTC, Kind: loadgen.KindConn, Workers: 1, Rep: 1, Rate: 1000})
	res.Counters = []counterRow{{N: 100, Delta: map[string]uint64{"forward_new": 7}, ClashFlows: 3}, {N: 1000, ClashFlows: -1}}
	md := string(headlineMarkdown(res))
	for _, want := range []string{"| 100 | forward_new 7 | 3 |\n", "| 1,000 |  | – |\n"} {
		if !strings.Contains(md, want) {
			t.Errorf("counters table lacks %q", want)
		}
	}
	// N=1,000's round has no counters: "–", not 0.
	if want := "| 100 | – | 4 / 3 (9 / 8) | – | – | – | – |\n| 1,000 | – | – | – | – | – | – |\n"; !strings.Contains(md, want) {
		t.Errorf("README lacks %q:\n%s", want, md)
	}
	csv := string(dataCSVReport(res))
	for _, want := range []string{"syn_retrans,paws_timewait,tw_recycled,error\n", ",9,8,0,\n", "1000,tc,conn,1,1,0,0.0,,1000.0,0.0,0.0,0.0,0,0,0.0,0.0,,,,\n"} {
		if !strings.Contains(csv, want) {
			t.Errorf("csv lacks %q:\n%s", want, csv)
		}
	}
}
