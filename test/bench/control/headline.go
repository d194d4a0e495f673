package main

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fastpath-net/fastpath/test/bench/internal/benchmain"
	"github.com/fastpath-net/fastpath/test/bench/internal/loadgen"
	"github.com/fastpath-net/fastpath/test/bench/internal/netstat"
	"github.com/fastpath-net/fastpath/test/bench/internal/rounds"
)

// The headline report (issue 9): docs/benchmarks/README.md, its CSVs and
// charts. Claims are ratios within this one run.

// Issue 9's targets.
const (
	targetScale     = 0.95 // fastpath's rate at the largest N / at the smallest
	targetVsDirect  = 0.90 // fastpath's rate / the direct path's, same N
	targetChangeP50 = 50 * time.Millisecond
	targetChangeN   = 20000
)

// Files the headline writes next to README.md.
const (
	dataCSV    = "headline-data.csv"
	controlCSV = "headline-control.csv"
	costCSV    = "headline-cost.csv"
)

func writeHeadline(dir string, res *results) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	files := map[string][]byte{
		dataCSV:     dataCSVReport(res),
		controlCSV:  csvReport(res),
		costCSV:     costCSVReport(res),
		"README.md": headlineMarkdown(res),
	}
	for name, c := range headlineCharts(res) {
		b, err := c.png()
		if err != nil {
			return fmt.Errorf("chart %s: %w", name, err)
		}
		files[name] = b
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// stat is one path, kind and N over the rounds: medians, and the spread of
// the rate.
type stat struct {
	Rate, Min, Max float64
	P50, P99       float64
	ClientCPU      float64
	ClientUser     float64
	Rounds         int
	Errors         uint64
	Failed         int
	// SYNs sent again and SYNs refused by a TIME_WAIT (PAWSTimewait) per
	// round: median and highest, over the rounds that read them (TCPRounds).
	SynRetrans, SynRetransMax float64
	PAWS, PAWSMax             float64
	TCPRounds                 int
}

func aggregate(res *results, n int, path, kind string, workers int) *stat {
	var rates, p50s, p99s, cpus, users, retrans, paws []float64
	st := &stat{}
	for _, p := range res.Data {
		if p.N != n || p.Path != path || p.Kind != kind || p.Workers != workers || p.Rep == 0 {
			continue
		}
		if p.Err != "" {
			st.Failed++
			continue
		}
		rates, p50s, p99s = append(rates, p.Rate), append(p50s, p.P50), append(p99s, p.P99)
		cpus, users = append(cpus, p.ClientCPU), append(users, p.ClientUser)
		st.Errors += p.Errors
		if p.TCP != nil {
			retrans = append(retrans, float64(p.TCP[netstat.SynRetrans]))
			paws = append(paws, float64(p.TCP[netstat.PAWSTimewait]))
		}
	}
	if len(rates) == 0 {
		if st.Failed == 0 {
			return nil
		}
		return st
	}
	r := rounds.Of(rates)
	st.Rounds, st.Rate, st.Min, st.Max = r.N, r.Median, r.Min, r.Max
	st.P50, st.P99 = rounds.Of(p50s).Median, rounds.Of(p99s).Median
	st.ClientCPU, st.ClientUser = rounds.Of(cpus).Median, rounds.Of(users).Median
	if len(retrans) > 0 {
		r, w := rounds.Of(retrans), rounds.Of(paws)
		st.TCPRounds, st.SynRetrans, st.SynRetransMax, st.PAWS, st.PAWSMax = r.N, r.Median, r.Max, w.Median, w.Max
	}
	return st
}

// rate is the median rate, or NaN when there is none.
func rate(res *results, n int, path, kind string, workers int) float64 {
	if st := aggregate(res, n, path, kind, workers); st != nil && st.Rounds > 0 {
		return st.Rate
	}
	return math.NaN()
}

// perRound is a path's new-connection rate in each round.
func perRound(res *results, n int, path string, workers int) map[int]float64 {
	return perRoundOf(res, loadgen.KindConn, n, path, workers)
}

// perRoundOf is a path's rate of one kind of point in each round.
func perRoundOf(res *results, kind string, n int, path string, workers int) map[int]float64 {
	out := map[int]float64{}
	for _, p := range res.Data {
		if p.N == n && p.Path == path && p.Kind == kind && p.Workers == workers && p.Rep > 0 && p.Err == "" {
			out[p.Rep] = p.Rate
		}
	}
	return out
}

// vsDirect is a path's rate over its direct baseline's, round by round.
func vsDirect(res *results, n int, path string, workers int) rounds.Spread {
	return rounds.Ratio(perRound(res, n, path, workers), perRound(res, n, baseOf(path), workers))
}

func changeP50(res *results, contender string, n int) (time.Duration, bool) {
	r := find(res, contender, n)
	if r == nil || r.Err != "" || len(r.Latencies) == 0 {
		return 0, false
	}
	return benchmain.Quantile(r.Latencies, 0.5), true
}

func pct(a, b float64) string {
	if math.IsNaN(a) || math.IsNaN(b) || b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f %%", 100*a/b)
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**not met**"
}

// pooled is res with each round's two new-connection legs of a path as
// one point (poolLegs): what the report's rounds are.
func pooled(res *results) *results {
	r := *res
	r.Data = poolLegs(res.Data)
	return &r
}

func headlineMarkdown(res *results) []byte {
	res = pooled(res)
	var b bytes.Buffer
	p := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	cfg := res.Cfg
	d := cfg.Data
	ns := cfg.Ns
	lo, hi := ns[0], ns[len(ns)-1]
	p("# fastpath vs kube-proxy: the headline benchmark")
	p("")
	p("Generated by `make bench` (this run: `%s`) on %s; the run took %s.", cfg.Command,
		res.Start.UTC().Format("2006-01-02 15:04 MST"), res.End.Sub(res.Start).Round(time.Second))
	p("Do not edit by hand: run it again. It measures and asserts nothing. Absolute numbers belong to this machine;")
	p("the claims are the ratios measured in the same run. Raw numbers: [%s](%s) (every data-path window: each round, each leg),", dataCSV, dataCSV)
	p("[%s](%s) (control path), [%s](%s) (cost).", controlCSV, controlCSV, costCSV, costCSV)
	p("")
	m := res.Machine
	p("| | |")
	p("|---|---|")
	p("| machine | %s, %d CPUs, %s RAM |", m.CPU, m.NumCPU, m.MemTotal)
	p("| kernel, Go | %s, %s |", m.Kernel, m.GoVersion)
	p("| load average | %s at start, %s at end%s |", res.LoadStart, res.LoadEnd, loadWarning(res))
	p("| kube-proxy | v1.37 (tools/), with the machine's %s |", orUnknown(res.Tools))
	p("| Services | N = %s, ClusterIP port 80, 2 endpoints each (hand-made EndpointSlices), created once in one kube-apiserver: %s |",
		joinInts(ns), createdSummary(res))
	p("| data path | %d interleaved rounds; windows %s (new connections: two legs of %s for a path and its baseline, ABBA), %s (requests), %s (stream), %s warm-up before each; %d kept-alive connections per worker |",
		d.Reps, d.Window, d.Window/2, d.LatWindow, d.StreamWindow, d.Warmup, d.Pool)
	p("| TCP metrics | not saved (net.ipv4.tcp_no_metrics_save=1) in every namespace of every topology: a client's kernel would otherwise keep and look up one entry per destination address, N through the VIPs and 2 on the direct path, a cost of the client that grows with N whatever the proxy |")
	p("| control path | %d changes per contender and N, %s apart (fewer if they take over %s) |", cfg.Changes, cfg.Gap, cfg.ChangeBudget)
	p("")

	p("## Claims")
	p("")
	p("| claim | measured | |")
	p("|---|---|---|")
	maxW := slices.Max(d.Workers)
	for _, w := range d.Workers {
		for _, path := range []string{pathTC, pathSock} {
			a, base := rate(res, hi, path, loadgen.KindConn, w), rate(res, lo, path, loadgen.KindConn, w)
			measured, met := pct(a, base), a >= targetScale*base
			// Side by side when measured: the blocks' ratio holds the
			// machine's drift between them, so it is context only.
			if r := sideRatio(res, path, w); r.N > 0 {
				measured, met = fmt.Sprintf("side by side %s (per-N blocks: %s)", r.Percent(), measured), r.Median >= targetScale
			}
			p("| %s: new connections/s at N=%s ≥ %.0f %% of N=%s (%d worker(s)) | %s | %s |", pathTitles[path], fmtN(hi), 100*targetScale, fmtN(lo), w,
				measured, verdict(met))
		}
	}
	for _, w := range d.Workers {
		for _, path := range []string{pathTC, pathSock} {
			worst, at := rounds.Spread{Median: math.Inf(1)}, 0
			for _, n := range ns {
				if r := vsDirect(res, n, path, w); r.N > 0 && r.Median < worst.Median {
					worst, at = r, n
				}
			}
			if worst.N == 0 {
				continue
			}
			p("| %s: new connections/s ≥ %.0f %% of %s at every N (%d worker(s)) | lowest %s (N=%s) | %s |",
				pathTitles[path], 100*targetVsDirect, pathTitles[baseOf(path)], w, worst.Percent(), fmtN(at), verdict(worst.Median >= targetVsDirect))
		}
	}
	for _, w := range d.Workers {
		var parts []string
		base := rate(res, lo, pathIPT, loadgen.KindConn, w)
		for _, n := range ns[1:] {
			parts = append(parts, fmt.Sprintf("N=%s: %+.0f %%", fmtN(n), 100*(rate(res, n, pathIPT, loadgen.KindConn, w)/base-1)))
		}
		p("| kube-proxy iptables: new connections/s vs N=%s (%d worker(s)) | %s | shown |", fmtN(lo), w, strings.Join(parts, ", "))
	}
	for _, w := range d.Workers {
		// TC: its client sits where kube-proxy's does.
		ahead, what := true, []string{}
		for _, n := range ns {
			fp, nf := rate(res, n, pathTC, loadgen.KindConn, w), rate(res, n, pathNFT, loadgen.KindConn, w)
			what = append(what, fmt.Sprintf("N=%s: %s", fmtN(n), pct(fp, nf)))
			if !(fp > nf) {
				ahead = false
			}
		}
		p("| fastpath TC ahead of nftables on new connections/s at every N (%d worker(s)); TC / nftables | %s | %s |", w, strings.Join(what, ", "), verdict(ahead))
	}
	{
		ahead, what := true, []string{}
		for _, n := range ns {
			f, okF := changeP50(res, "fastpath", n)
			nf, okN := changeP50(res, "nftables", n)
			what = append(what, fmt.Sprintf("N=%s: %s vs %s", fmtN(n), fmtDur(f), fmtDur(nf)))
			if !okF || (okN && f >= nf) {
				ahead = false
			}
		}
		p("| fastpath ahead of nftables on change latency (median) at every N | %s | %s |", strings.Join(what, "; "), verdict(ahead))
	}
	if f, ok := changeP50(res, "fastpath", targetChangeN); ok {
		p("| one change at N=%s visible in < %s (median, apiserver to datapath) | %s | %s |", fmtN(targetChangeN), fmtDur(targetChangeP50), fmtDur(f), verdict(f < targetChangeP50))
	} else {
		f, _ := changeP50(res, "fastpath", hi)
		p("| one change at N=%s visible in < %s (median) | not in this run (N=%s: %s) | – |", fmtN(targetChangeN), fmtDur(targetChangeP50), fmtN(hi), fmtDur(f))
	}
	p("")

	p("## New connections per second")
	p("")
	p("Connect, send 16 bytes, read the 64-byte reply until the server closes, close; each connection to one of the N")
	p("Services at random. Median of the rounds, (min–max) below it. *vs direct*: the path's rate / its baseline's in")
	p("the same round, median over the rounds and their range in parentheses. Each round runs a path and its baseline as")
	p("an ABBA block of half-window legs (baseline, path, path, baseline; the mirror in every other round) and takes each")
	p("one's rate over its two legs pooled (connections / both windows), so the two share the block's middle in time and")
	p("a drift of the machine linear over the block cancels from the ratio. kube-proxy's paths have no baseline: one")
	p("whole window each per round. The socket LB's client is a process in the node's namespace, one veth hop closer to")
	p("the backends than the other clients: its baseline is *direct from the node*, the same process placement without a")
	p("Service; TC's is *direct*. The CSV keeps every leg (column leg: 1 or 2; 0 for a whole window).")
	p("")
	p("Below each table, what explains a falling rate: *SYNs sent again* (TcpExt TCPSynRetrans) and *SYNs refused by a")
	p("TIME_WAIT* (TcpExt PAWSTimewait: a backend's TIME_WAIT socket dropped a SYN whose timestamp was older than the")
	p("last it saw, as happens when a NAT sends a new flow onto a backend tuple still in TIME_WAIT with another")
	p("timestamp offset), summed over every namespace of every node, over each round's runs (both legs of a paired path,")
	p("warm-ups included): only that path carries traffic meanwhile. On this kernel such a refusal moves PAWSTimewait at the backend and")
	p("TCPSynRetrans at the client, not PAWSActive or PAWSEstab (netstat.TestTimeWaitRefusal). A SYN sent again after")
	p("the initial timeout costs its connection a second.")
	p("")
	p("![new connections/s, %d workers](%s)", maxW, chartName("conn", maxW))
	p("")
	for _, w := range d.Workers {
		p("### %d worker(s)", w)
		p("")
		header, sep := pathHeader()
		p("%s TC vs direct | sock vs direct from the node | iptables vs N=%s |", header, fmtN(lo))
		p("%s---:|---:|---:|", sep)
		for _, n := range ns {
			row := fmt.Sprintf("| %s |", fmtN(n))
			for _, path := range pathNames {
				row += " " + cell(aggregate(res, n, path, loadgen.KindConn, w), "%.0f", 1) + " |"
			}
			p("%s %s | %s | %s |", row, vsDirect(res, n, pathTC, w).Percent(), vsDirect(res, n, pathSock, w).Percent(),
				pct(rate(res, n, pathIPT, loadgen.KindConn, w), rate(res, lo, pathIPT, loadgen.KindConn, w)))
		}
		p("")
		p("SYNs sent again / SYNs refused by a TIME_WAIT, per round (%d worker(s)): median, highest in parentheses.", w)
		p("")
		pathTable(p, ns, func(n int, path string) string {
			return synCell(aggregate(res, n, path, loadgen.KindConn, w))
		})
		p("")
	}

	sideSection(p, res)

	p("## Requests on kept-alive connections")
	p("")
	p("Each worker holds %d connections, opened to random Services, and sends one 16-byte request at a time on a random", d.Pool)
	p("one, waiting for the 64-byte reply. p50 / p99 in µs (medians over the rounds), and requests/s.")
	p("")
	for _, w := range d.Workers {
		p("### %d worker(s)", w)
		p("")
		pathTable(p, ns, func(n int, path string) string {
			st := aggregate(res, n, path, loadgen.KindLatency, w)
			if st == nil || st.Rounds == 0 {
				return "–"
			}
			return fmt.Sprintf("%.0f / %.0f µs, %.0f/s", st.P50, st.P99, st.Rate)
		})
		p("")
	}

	p("## Single-stream throughput")
	p("")
	p("One connection to a random Service, 128 KiB writes for %s into a server that discards; Gbit/s, median (min–max).", d.StreamWindow)
	p("")
	pathTable(p, ns, func(n int, path string) string {
		return cell(aggregate(res, n, path, loadgen.KindStream, 1), "%.2f", 1e9)
	})
	p("")

	p("## Control path")
	p("")
	p("Each contender alone on a fresh node (the others paused). *cold start*: exec until its log reports all N Services")
	p("programmed; *change*: an EndpointSlice update moving one random Service's endpoints to the other port, from the")
	p("apiserver's answer until a probe through the VIP (every 1 ms) reaches the new port; *CPU/change*: the proxy's and")
	p("its children's CPU over the change window per change. Details as in [control.md](control.md).")
	p("")
	p("![change latency](%s)", "headline-change.png")
	p("")
	p("| N | contender | cold start | VIPs answer | changes | change p50 | p99 | not seen | CPU/change | net of idle |")
	p("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range res.Rows {
		if r.Err != "" {
			p("| %s | %s | FAILED: %s ||||||||", fmtN(r.N), r.Contender, strings.ReplaceAll(firstLineOf(r.Err), "|", "/"))
			continue
		}
		p("| %s | %s | %s | %s | %d | %s | %s | %d | %.1f ms | %.1f ms |", fmtN(r.N), r.Contender, fmtDur(r.ColdStart), fmtDur(r.Answer),
			len(r.Latencies)+r.Timeouts, fmtDur(benchmain.Quantile(r.Latencies, 0.5)), fmtDur(benchmain.Quantile(r.Latencies, 0.99)), r.Timeouts, msf(r.CPURaw), msf(r.CPUNet))
	}
	if cfg.ChangeBudget > 0 {
		p("")
		p("A contender's changes stop early once they have taken %s (after %d): *changes* says how many were made.", cfg.ChangeBudget, minChanges)
	}
	p("")

	p("## Cost")
	p("")
	p("After the control path, before the data path's traffic. RSS of the proxy process after its cold start and %s idle. fastpath:", cfg.Idle)
	p("its BPF maps as `fastpathctl status` reports them (kernel memlock accounting of all maps, preallocated to their")
	p("configured sizes whatever N is; entries of the service, backend and reverse-NAT maps). kube-proxy: its ruleset in")
	p("the node's namespace as `iptables-save` / `nft list ruleset` print it (rules: iptables `-A` lines; nft rules plus")
	p("verdict-map and set elements).")
	p("")
	p("| N | contender | RSS | BPF maps | LB map entries | rules | ruleset lines | ruleset bytes |")
	p("|---:|---|---:|---:|---:|---:|---:|---:|")
	for _, c := range res.Costs {
		if c.Err != "" {
			p("| %s | %s | %s | could not read: %s |||||", fmtN(c.N), c.Contender, mib(c.RSS), strings.ReplaceAll(firstLineOf(c.Err), "|", "/"))
			continue
		}
		if c.Contender == "fastpath" {
			p("| %s | %s | %s | %s | %d | – | – | – |", fmtN(c.N), c.Contender, mib(c.RSS), mib(c.MapBytes), c.MapEntries)
			continue
		}
		p("| %s | %s | %s | – | – | %d | %d | %s |", fmtN(c.N), c.Contender, mib(c.RSS), c.Rules, c.RulesetLines, mib(uint64(c.RulesetBytes)))
	}
	p("")

	if len(res.Counters) > 0 {
		p("### fastpath's datapath counters")
		p("")
		p("fastpath's datapath counters over each N's data rounds (fp_metrics packets, as `fastpathctl status` shows them;")
		p("counters that stayed 0 left out). *forward_new*: flows the TC program balanced; *sock_connect*: connects the")
		p("socket LB translated; any *drop_* is a packet the datapath dropped (a dropped SYN costs its connection a")
		p("retransmission, 1 s). *clash ports*: flows in fastpath's connection tracking at the end of the rounds that")
		p("were given a source port of their own because their tuple at the backend clashed with another flow's (kept")
		p("about as long as the backend's TIME_WAIT, so about the last minute of the rounds; no counter counts them all).")
		p("")
		p("| N | counters | clash ports |")
		p("|---:|---|---:|")
		for _, c := range res.Counters {
			var parts []string
			for _, name := range slices.Sorted(maps.Keys(c.Delta)) {
				if v := c.Delta[name]; v != 0 {
					parts = append(parts, fmt.Sprintf("%s %d", name, v))
				}
			}
			clash := "–"
			if c.ClashFlows >= 0 {
				clash = strconv.Itoa(c.ClashFlows)
			}
			p("| %s | %s | %s |", fmtN(c.N), strings.Join(parts, ", "), clash)
		}
		p("")
	}

	p("## Policy and L7")
	p("")
	p("kube-proxy enforces neither NetworkPolicy nor L7 rules, so there is nothing to set fastpath's policy against")
	p("here; their costs have harnesses of their own, run on the same kind of machine: `make bench-policy`")
	p("([policy.md](policy.md): connections/s to a pod selected by 500 policies vs 1, alternating; a policy, pod-label")
	p("and namespace-label change until every node enforces it; the agent's CPU for a full policy computation) and")
	p("`make bench-l7` ([l7.md](l7.md): HTTP through the L7 proxy vs the L4 path, latency and requests/s; the proxy's")
	p("RSS with idle connections).")
	p("")
	p("## The load generator")
	p("")
	p("Its own CPU (getrusage of the generator process over the window) in %% of one core, median over the rounds, at")
	p("N=%s; user time in parentheses, the rest is the kernel's network path it drives. It uses raw blocking syscalls,", fmtN(hi))
	p("one OS thread per worker ([loadgen](../../test/bench/internal/loadgen)); the servers are one child process per node, an epoll event loop of raw syscalls on one locked thread per CPU.")
	p("")
	p("| load | %s |", strings.Join(titles(pathNames), " | "))
	p("|---|%s", strings.Repeat("---:|", len(pathNames)))
	for _, k := range loadKinds(d) {
		row := fmt.Sprintf("| %s, %d worker(s) |", k.kind, k.workers)
		for _, path := range pathNames {
			st := aggregate(res, hi, path, k.kind, k.workers)
			if st == nil || st.Rounds == 0 {
				row += " – |"
				continue
			}
			row += fmt.Sprintf(" %.0f %% (%.0f %%) |", st.ClientCPU, st.ClientUser)
		}
		p("%s", row)
	}
	p("")

	p("## How it is measured")
	p("")
	p("- One kube-apiserver + etcd (internal/testenv). The N Services and their EndpointSlices are created once and every")
	p("  contender watches the same objects as system:kube-proxy. For each N, each contender in turn gets a fresh node")
	p("  (fp- network namespaces: a router namespace where the proxy runs, a client and two backends, each backend")
	p("  serving two ports), its cold start and changes are measured alone, and then its process is paused (SIGSTOP) with")
	p("  its programming in place: the datapaths are the kernel's and serve without it.")
	p("- Data path, all contenders' nodes up at once: in each round every kind of load runs on every path back to back,")
	p("  in an order that changes between rounds, so drift on a shared machine hits every path alike. New connections:")
	p("  fastpath TC and direct, and fastpath socket LB and direct from the node, each run as an ABBA block of two")
	p("  half-window legs apiece (base, path, path, base; the mirror BAAB in every other round); a round's rate of each")
	p("  pools its two legs, and the ratio to the baseline is taken round by round from these pooled rates, so a drift")
	p("  linear over the block cancels from it. kube-proxy iptables and nftables run one whole window per round; the")
	p("  blocks and these windows rotate between rounds. Requests and the stream: one window per path, rotated.")
	p("  **direct**: a client namespace on fastpath's node, on a veth like the VIP client's, connecting to the backends'")
	p("  IP:port (no Service; the node's TC program sees it and passes it on). **fastpath TC**: client namespace -> VIP,")
	p("  per-packet LB at the node's TC ingress. **direct from the node**: a process in fastpath's node namespace, in the")
	p("  agent's cgroup -> the backends' IP:port. **fastpath socket LB**: the same placement -> VIP, translated at")
	p("  connect(). **kube-proxy iptables / nftables**: client namespace -> VIP through that node's rules.")
	p("- The servers close first, so TIME_WAIT stays on the backends and the client's ports are free again at once.")
	p("")
	return b.Bytes()
}

// sideRatio is a path's side-by-side rate at the largest N over the
// smallest, repetition by repetition (N: 0 when not measured).
func sideRatio(res *results, path string, workers int) rounds.Spread {
	lo, hi, ok := pairedNs(res.Cfg)
	if !ok {
		return rounds.Spread{}
	}
	return rounds.Ratio(perRoundOf(res, kindPaired, hi, path, workers), perRoundOf(res, kindPaired, lo, path, workers))
}

// sideSection reports the side-by-side phase (sidebyside.go).
func sideSection(p func(string, ...any), res *results) {
	lo, hi, ok := pairedNs(res.Cfg)
	if !ok {
		return
	}
	d := res.Cfg.Data
	p("## N=%s and N=%s side by side", fmtN(lo), fmtN(hi))
	p("")
	if res.SideErr != "" {
		p("Not measured: %s", strings.ReplaceAll(firstLineOf(res.SideErr), "|", "/"))
		p("")
		return
	}
	p("The per-N blocks above run minutes apart, and the machine drifts between them (compare the direct paths' rates")
	p("from one N to the next). Here, after N=%s's rounds, a second fastpath node (the same topology, its agent started", fmtN(hi))
	p("with `--service-proxy-name %s`) serves %s Services of its own, labelled", sideProxyName, fmtN(lo))
	p("`service.kubernetes.io/service-proxy-name=%s` (kube-proxy and the main agent skip them), while N=%s's node still", sideProxyName, fmtN(hi))
	p("serves all %s. In each of %d repetitions, for each worker count, TC and the socket LB run two legs of %s at each", fmtN(hi), d.PairedReps, d.Window/2)
	p("count in the order N=%s (tc, sock), N=%s (tc, sock, sock, tc), N=%s (sock, tc), mirrored in every other", fmtN(lo), fmtN(hi), fmtN(lo))
	p("repetition, so each path's legs at one count have the same mean time as at the other and a drift linear over the")
	p("repetition cancels. *side by side*: a repetition's rate at N=%s (its two legs pooled) / at N=%s; median, range in", fmtN(hi), fmtN(lo))
	p("parentheses. The claim is judged on it; *per-N blocks* is the blocks' ratio of medians, for context. The CSV's")
	p("kind `%s` holds these legs.", kindPaired)
	p("")
	p("| path | workers | conn/s at N=%s | conn/s at N=%s | side by side | per-N blocks | errors |", fmtN(lo), fmtN(hi))
	p("|---|---:|---:|---:|---:|---:|---:|")
	for _, w := range d.Workers {
		for _, path := range []string{pathTC, pathSock} {
			a, b := aggregate(res, lo, path, kindPaired, w), aggregate(res, hi, path, kindPaired, w)
			if a == nil || b == nil {
				continue
			}
			blocks := pct(rate(res, hi, path, loadgen.KindConn, w), rate(res, lo, path, loadgen.KindConn, w))
			p("| %s | %d | %s | %s | %s | %s | %d |", pathTitles[path], w, cell(a, "%.0f", 1), cell(b, "%.0f", 1),
				sideRatio(res, path, w).Percent(), blocks, a.Errors+b.Errors)
		}
	}
	p("")
}

// pathHeader is a table's header with one column per path after N, and
// its separator line.
func pathHeader() (header, sep string) {
	header, sep = "| N |", "|---:|"
	for _, path := range pathNames {
		header += " " + pathTitles[path] + " |"
		sep += "---:|"
	}
	return header, sep
}

// pathTable writes a table with a row per N and a column per path.
func pathTable(p func(string, ...any), ns []int, cellOf func(n int, path string) string) {
	header, sep := pathHeader()
	p("%s\n%s", header, sep)
	for _, n := range ns {
		row := fmt.Sprintf("| %s |", fmtN(n))
		for _, path := range pathNames {
			row += " " + cellOf(n, path) + " |"
		}
		p("%s", row)
	}
}

func titles(paths []string) []string {
	var out []string
	for _, p := range paths {
		out = append(out, pathTitles[p])
	}
	return out
}

// cell is "median<br>(min–max)" of st's rate divided by div.
func cell(st *stat, format string, div float64) string {
	switch {
	case st == nil:
		return "–"
	case st.Rounds == 0:
		return fmt.Sprintf("failed (%d)", st.Failed)
	}
	s := fmt.Sprintf(format+"<br>("+format+"–"+format+")", st.Rate/div, st.Min/div, st.Max/div)
	if st.Errors > 0 || st.Failed > 0 {
		s += fmt.Sprintf("<br>%d errors, %d failed", st.Errors, st.Failed)
	}
	return s
}

// synCell is "SYNs sent again / refused by a TIME_WAIT", per round.
func synCell(st *stat) string {
	if st == nil || st.TCPRounds == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f / %.0f (%.0f / %.0f)", st.SynRetrans, st.PAWS, st.SynRetransMax, st.PAWSMax)
}

func fmtN(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func joinInts(v []int) string {
	var out []string
	for _, n := range v {
		out = append(out, fmtN(n))
	}
	return strings.Join(out, ", ")
}

func chartName(kind string, workers int) string {
	return fmt.Sprintf("headline-%s-%dw.png", kind, workers)
}

func headlineCharts(res *results) map[string]*chart {
	res = pooled(res)
	out := map[string]*chart{}
	var xs []string
	for _, n := range res.Cfg.Ns {
		xs = append(xs, fmtN(n))
	}
	for _, w := range res.Cfg.Data.Workers {
		c := &chart{title: fmt.Sprintf("New TCP connections/s, %d worker(s), median", w), ylabel: "conn/s", xs: xs}
		for _, path := range pathNames {
			s := series{name: chartLabel(path), key: path}
			for _, n := range res.Cfg.Ns {
				s.values = append(s.values, rate(res, n, path, loadgen.KindConn, w))
			}
			c.series = append(c.series, s)
		}
		out[chartName("conn", w)] = c
	}
	c := &chart{title: "Change visible through the VIP, median", ylabel: "ms (log)", xs: xs, logY: true}
	for _, name := range contenderNames {
		s := series{name: name, key: name}
		for _, n := range res.Cfg.Ns {
			if d, ok := changeP50(res, name, n); ok {
				s.values = append(s.values, math.Max(msf(d), 0.1))
			} else {
				s.values = append(s.values, math.NaN())
			}
		}
		c.series = append(c.series, s)
	}
	out["headline-change.png"] = c
	return out
}

// chartLabel is a path's name in a chart's legend (short: the font is big).
func chartLabel(path string) string {
	switch path {
	case pathTC:
		return "fastpath tc"
	case pathSock:
		return "fastpath sock"
	}
	return path
}

var dataCSVHeader = []string{"n", "path", "kind", "workers", "round", "leg", "window_ms", "load1", "rate", "p50_us", "p99_us", "max_us", "ops", "errors", "client_cpu_pct", "client_user_pct", "syn_retrans", "paws_timewait", "tw_recycled", "error"}

func dataCSVReport(res *results) []byte {
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	_ = w.Write(dataCSVHeader)
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }
	for _, p := range res.Data {
		load1, _, _ := strings.Cut(p.Load1, " ")
		row := []string{strconv.Itoa(p.N), p.Path, p.Kind, strconv.Itoa(p.Workers), strconv.Itoa(p.Rep), strconv.Itoa(p.Leg),
			f(float64(p.Window) / 1e6), load1,
			f(p.Rate), f(p.P50), f(p.P99), f(p.Max), strconv.FormatUint(p.Ops, 10), strconv.FormatUint(p.Errors, 10),
			f(p.ClientCPU), f(p.ClientUser)}
		for _, c := range netstat.Reported {
			v := "" // not read
			if p.TCP != nil {
				v = strconv.FormatUint(p.TCP[c], 10)
			}
			row = append(row, v)
		}
		_ = w.Write(append(row, firstLineOf(p.Err)))
	}
	w.Flush()
	return b.Bytes()
}

func costCSVReport(res *results) []byte {
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	_ = w.Write([]string{"n", "contender", "rss_bytes", "bpf_map_bytes", "map_entries", "rules", "ruleset_lines", "ruleset_bytes", "error"})
	for _, c := range res.Costs {
		_ = w.Write([]string{strconv.Itoa(c.N), c.Contender, strconv.FormatUint(c.RSS, 10), strconv.FormatUint(c.MapBytes, 10),
			strconv.Itoa(c.MapEntries), strconv.Itoa(c.Rules), strconv.Itoa(c.RulesetLines), strconv.Itoa(c.RulesetBytes), firstLineOf(c.Err)})
	}
	w.Flush()
	return b.Bytes()
}
