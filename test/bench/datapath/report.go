package main

import (
	"bytes"
	"cmp"
	"encoding/csv"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fastpath-net/fastpath/test/bench/internal/loadgen"
	"github.com/fastpath-net/fastpath/test/bench/internal/rounds"

	"github.com/fastpath-net/fastpath/internal/ctl"
)

// Budget targets of the issue "Performance budget".
const (
	budgetVsDirect    = 0.90 // LB new-connection rate / direct rate, at every N
	budgetScale       = 0.95 // rate at the largest N / rate at N=1
	budgetScaleN      = 50000
	budgetUpdate      = 20 * time.Microsecond // reconciler median per change, at budgetScaleN services
	budgetRSS         = 150 << 20             // agent RSS at budgetScaleN services
	budgetRSSN        = 50000
	budgetUpdateNeedN = 50000
)

type aggKey struct {
	N       int
	Mode    string
	Kind    string
	Workers int
}

// agg is the median over repetitions of one point.
type agg struct {
	Rate, P50, P99, ClientCPU, ClientUserPct, ServerCPU, AgentCPU float64
	MachineBusy, Softirq, Steal, OtherCPU                         float64
	SynRetrans, PAWSTimewait                                      float64
	Errors                                                        uint64
	Drops                                                         uint64
	Reps                                                          int // successful repetitions
	Failed                                                        int // repetitions whose run failed
}

func aggregate(pts []point, cfg config) map[aggKey]*agg {
	groups := map[aggKey][]point{}
	failed := map[aggKey]int{}
	for _, p := range pts {
		k := aggKey{p.N, p.Mode, p.Kind, p.Workers}
		if p.Err != "" {
			failed[k]++
			if _, ok := groups[k]; !ok {
				groups[k] = nil
			}
			continue
		}
		groups[k] = append(groups[k], p)
	}
	out := map[aggKey]*agg{}
	for k, g := range groups {
		dur := cfg.Duration
		if k.Kind == loadgen.KindLatency {
			dur = cfg.LatDuration
		}
		a := &agg{Reps: len(g), Failed: failed[k]}
		a.Rate = median(g, func(p point) float64 { return p.Rate })
		a.P50 = median(g, func(p point) float64 { return p.P50 })
		a.P99 = median(g, func(p point) float64 { return p.P99 })
		a.ClientCPU = median(g, func(p point) float64 { return p.ClientCPU })
		a.ClientUserPct = median(g, func(p point) float64 { return 100 * p.ClientUser / dur.Seconds() })
		a.ServerCPU = median(g, func(p point) float64 { return p.ServerCPU })
		a.AgentCPU = median(g, func(p point) float64 { return p.AgentCPU })
		a.MachineBusy = median(g, func(p point) float64 { return p.MachineBusy })
		a.Softirq = median(g, func(p point) float64 { return p.Softirq })
		a.Steal = median(g, func(p point) float64 { return p.Steal })
		a.OtherCPU = median(g, func(p point) float64 { return p.OtherCPU })
		a.SynRetrans = median(g, func(p point) float64 { return float64(p.SynRetrans) })
		a.PAWSTimewait = median(g, func(p point) float64 { return float64(p.PAWSTimewait) })
		for _, p := range g {
			a.Errors += p.Errors + uint64(p.Stuck)
			a.Drops += p.Drops
		}
		out[k] = a
	}
	return out
}

// poolLegs merges each repetition's two new-connection legs (ABBA,
// connSchedule) into one point, as if one run: rate = all connections /
// both windows; counts and CPU seconds add up; CPU percentages, and p50 and
// p99 (weighted by connections; the histograms are gone) are averaged. A
// failed leg fails the repetition. Other points pass through.
func poolLegs(pts []point) []point {
	type key struct {
		N          int
		Mode, Kind string
		Workers    int
		Rep        int
	}
	legOf := func(p point) (key, bool) { return key{p.N, p.Mode, p.Kind, p.Workers, p.Rep}, p.Leg != 0 }
	first := func(p point) point {
		p.Leg = 0
		p.ErrKinds = maps.Clone(p.ErrKinds)
		return p
	}
	return rounds.PoolLegs(pts, legOf, first, func(q *point, p point) {
		if q.Err != "" || p.Err != "" {
			q.Err = cmp.Or(q.Err, p.Err)
			return
		}
		wa, wb := float64(q.Ops), float64(p.Ops)
		if wa+wb > 0 {
			q.P50 = (q.P50*wa + p.P50*wb) / (wa + wb)
			q.P99 = (q.P99*wa + p.P99*wb) / (wa + wb)
		}
		mean := func(a *float64, b float64) { *a = (*a + b) / 2 }
		for _, f := range []struct {
			a *float64
			b float64
		}{{&q.ClientCPU, p.ClientCPU}, {&q.ServerCPU, p.ServerCPU}, {&q.AgentCPU, p.AgentCPU}, {&q.MachineBusy, p.MachineBusy},
			{&q.Softirq, p.Softirq}, {&q.Steal, p.Steal}, {&q.OtherCPU, p.OtherCPU}} {
			mean(f.a, f.b)
		}
		q.Window += p.Window
		q.Ops += p.Ops
		q.Errors += p.Errors
		q.Stuck += p.Stuck
		for k, v := range p.ErrKinds {
			if q.ErrKinds == nil {
				q.ErrKinds = map[string]uint64{}
			}
			q.ErrKinds[k] += v
		}
		q.ClientUser += p.ClientUser
		q.ClientSys += p.ClientSys
		q.ForwardNew += p.ForwardNew
		q.SockConnect += p.SockConnect
		q.Drops += p.Drops
		q.SynRetrans += p.SynRetrans
		q.PAWSTimewait += p.PAWSTimewait
		q.TWRecycled += p.TWRecycled
		if q.Window > 0 {
			q.Rate = float64(q.Ops) / q.Window.Seconds()
		}
	})
}

func median(pts []point, f func(point) float64) float64 {
	v := make([]float64, len(pts))
	for i, p := range pts {
		v[i] = f(p)
	}
	if len(v) == 0 {
		return 0
	}
	return rounds.Of(v).Median
}

func writeReport(dir string, res *results) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var long bytes.Buffer
	if err := writeCSV(&long, res); err != nil {
		return err
	}
	traffic, other, err := splitCSV(long.Bytes())
	if err != nil {
		return err
	}
	md := markdown(res)
	for name, data := range map[string][]byte{"datapath.csv": other, "datapath-traffic.csv": traffic, "datapath.md": []byte(md)} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p+".tmp", data, 0o644); err != nil {
			return err
		}
		if err := os.Rename(p+".tmp", p); err != nil {
			return err
		}
	}
	return nil
}

// csvHeader: one measured value per row ("long" format), so every section
// fits one header. datapath.csv keeps it for the agent and update sections;
// the traffic section, most of the rows, goes wide (splitCSV).
var csvHeader = []string{"section", "n", "mode", "kind", "workers", "rep", "leg", "metric", "value", "unit"}

func writeCSV(buf *bytes.Buffer, res *results) error {
	w := csv.NewWriter(buf)
	rows := [][]string{csvHeader}
	add := func(section string, n int, mode, kind string, workers, rep, leg int, metric string, v float64, unit string) {
		itoa := func(i int) string { // 0: none
			if i > 0 {
				return strconv.Itoa(i)
			}
			return ""
		}
		rows = append(rows, []string{section, strconv.Itoa(n), mode, kind, itoa(workers), itoa(rep), itoa(leg), metric, strconv.FormatFloat(v, 'f', -1, 64), unit})
	}
	for _, p := range res.Points {
		t := func(metric string, v float64, unit string) {
			add("traffic", p.N, p.Mode, p.Kind, p.Workers, p.Rep, p.Leg, metric, v, unit)
		}
		if p.Err != "" {
			t("failed", 1, "count")
			continue
		}
		t("window", round(ms(p.Window), 3), "ms")
		t("rate", round(p.Rate, 1), "1/s")
		t("p50", round(p.P50, 2), "us")
		t("p99", round(p.P99, 2), "us")
		t("ops", float64(p.Ops), "count")
		t("errors", float64(p.Errors), "count")
		t("stuck_workers", float64(p.Stuck), "count")
		t("client_user", round(p.ClientUser, 3), "s")
		t("client_sys", round(p.ClientSys, 3), "s")
		t("client_cpu", round(p.ClientCPU, 1), "%core")
		t("server_cpu", round(p.ServerCPU, 1), "%core")
		t("agent_cpu", round(p.AgentCPU, 1), "%core")
		t("tc_forward_new", float64(p.ForwardNew), "count")
		t("tc_forward_ct", float64(p.ForwardCT), "count")
		t("tc_reply_revnat", float64(p.ReplyRevNat), "count")
		t("sock_connect", float64(p.SockConnect), "count")
		t("drops", float64(p.Drops), "count")
		t("machine_busy", round(p.MachineBusy, 1), "%all")
		t("machine_softirq", round(p.Softirq, 1), "%all")
		t("machine_steal", round(p.Steal, 1), "%all")
		t("other_cpu", round(p.OtherCPU, 1), "%core")
		t("tcp_syn_retrans", float64(p.SynRetrans), "count")
		t("tcp_paws_timewait", float64(p.PAWSTimewait), "count")
		t("tcp_tw_recycled", float64(p.TWRecycled), "count")
	}
	for _, nr := range res.PerN {
		a := func(metric string, v float64, unit string) { add("agent", nr.N, "", "", 0, 0, 0, metric, v, unit) }
		a("services_file", float64(nr.FileBytes), "bytes")
		a("parse_time", round(ms(nr.Parse), 3), "ms")
		a("parse_alloc", float64(nr.ParseAlloc), "bytes")
		a("start_to_programmed", round(ms(nr.Ready), 3), "ms")
		a("first_sync", round(ms(nr.Took), 3), "ms")
		a("rss", float64(nr.RSS), "bytes")
		a("rss_peak", float64(nr.HWM), "bytes")
		a("rss_after_traffic", float64(nr.RSSAfter), "bytes")
		a("map_memory", float64(nr.MapMem), "bytes")
		a("map_memory_after_traffic", float64(nr.MapMemEnd), "bytes")
		for _, m := range nr.Maps {
			a("entries_"+m.Name, float64(m.Entries), "count")
			a("memory_"+m.Name, float64(m.MemoryBytes), "bytes")
		}
		for _, name := range ctl.CounterNames {
			a("counter_"+name, float64(nr.Counters[name]), "packets")
		}
	}
	if u := res.Update; u != nil {
		a := func(mode, metric string, v float64, unit string) {
			add("update", u.N, mode, "", 0, 0, 0, metric, v, unit)
		}
		a("", "upsert_all", round(ms(u.UpsertAll), 3), "ms")
		a("", "initial_sync", round(ms(u.InitialSync), 3), "ms")
		a("", "frontends_left", float64(u.FrontendsLeft), "count")
		a("", "live_heap_table_reconciler", float64(u.LiveHeap), "bytes")
		for _, o := range u.Ops {
			name := strings.ReplaceAll(o.Name, " ", "_")
			a(name, "median", round(us(o.quantile(0.5)), 2), "us")
			a(name, "p99", round(us(o.quantile(0.99)), 2), "us")
			a(name, "mean", round(us(o.mean()), 2), "us")
			a(name, "max", round(us(o.max()), 2), "us")
			a(name, "count", float64(len(o.Samples)), "count")
		}
	}
	for _, pc := range res.ProgCost {
		for _, k := range append(slices.Clone(pc.Kinds), pc.Repeated) {
			name := strings.ReplaceAll(k.Name, " ", "_")
			add("progcost", pc.N, name, "", 0, 0, 0, "median", round(nanos(k.quantile(0.5)), 1), "ns")
			add("progcost", pc.N, name, "", 0, 0, 0, "mean", round(nanos(k.mean()), 1), "ns")
			add("progcost", pc.N, name, "", 0, 0, 0, "count", float64(len(k.Samples)), "count")
		}
	}
	if err := w.WriteAll(rows); err != nil {
		return err
	}
	return w.Error()
}

// trafficKey are the columns naming a traffic point in datapath-traffic.csv.
var trafficKey = []string{"n", "mode", "kind", "workers", "rep", "leg"}

// splitCSV turns writeCSV's long rows into datapath-traffic.csv, one row
// per traffic point (round) with a column per metric named "metric[unit]"
// in first-seen order (a failed point has only failed[count] = 1), and
// datapath.csv, the other sections still long. The same numbers: the long
// form repeated the point's key and unit on each of its 21 metrics, which
// made the file over 300 KB at 320 points.
func splitCSV(long []byte) (traffic, other []byte, err error) {
	rows, err := csv.NewReader(bytes.NewReader(long)).ReadAll()
	if err != nil || len(rows) == 0 {
		return nil, nil, fmt.Errorf("datapath csv: %v (%d rows)", err, len(rows))
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[h] = i
	}
	var keep [][]string
	var points [][]string // key columns, then values by metric column
	pointOf := map[string]int{}
	metricCol := map[string]int{}
	var metrics []string
	for _, r := range rows {
		if r[col["section"]] != "traffic" {
			keep = append(keep, r)
			continue
		}
		var key []string
		for _, k := range trafficKey {
			key = append(key, r[col[k]])
		}
		id := strings.Join(key, ",")
		i, ok := pointOf[id]
		if !ok {
			i = len(points)
			pointOf[id] = i
			points = append(points, key)
		}
		name := r[col["metric"]] + "[" + r[col["unit"]] + "]"
		c, ok := metricCol[name]
		if !ok {
			c = len(metrics)
			metricCol[name] = c
			metrics = append(metrics, name)
		}
		for len(points[i]) <= len(trafficKey)+c {
			points[i] = append(points[i], "")
		}
		points[i][len(trafficKey)+c] = r[col["value"]]
	}
	for i := range points {
		for len(points[i]) < len(trafficKey)+len(metrics) {
			points[i] = append(points[i], "")
		}
	}
	var t, o bytes.Buffer
	tw := csv.NewWriter(&t)
	_ = tw.Write(append(append([]string{}, trafficKey...), metrics...))
	_ = tw.WriteAll(points)
	ow := csv.NewWriter(&o)
	_ = ow.WriteAll(keep)
	if err := errors.Join(tw.Error(), ow.Error()); err != nil {
		return nil, nil, err
	}
	return t.Bytes(), o.Bytes(), nil
}

func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// budgetRow is one target with what was measured.
type budgetRow struct{ target, measured, status string }

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "**not met**"
}

func budget(res *results, ag map[aggKey]*agg) []budgetRow {
	cfg := res.Cfg
	var rows []budgetRow
	for _, m := range modes {
		if m.Base == "" {
			continue
		}
		worst, at := math.Inf(1), ""
		for _, n := range cfg.Ns {
			for _, w := range cfg.Workers {
				// Paired round by round: each repetition runs the modes
				// back to back, so the ratio within it cancels drift.
				r := vsBase(res.Points, n, m, w)
				if r.N == 0 {
					continue
				}
				if r.Median < worst {
					worst, at = r.Median, fmt.Sprintf("N=%s, %d worker(s); per repetition %s", fmtInt(n), w, r.Percent())
				}
			}
		}
		row := budgetRow{target: fmt.Sprintf("%s: new-connection rate ≥ %.0f %% of %s at every N", m.Name, 100*budgetVsDirect, m.Base)}
		if math.IsInf(worst, 1) {
			row.measured, row.status = "not measured", "n/a"
		} else {
			row.measured, row.status = fmt.Sprintf("lowest %.1f %% (%s)", 100*worst, at), met(worst >= budgetVsDirect)
		}
		rows = append(rows, row)
	}
	for _, m := range modes {
		if m.Base != "" {
			rows = append(rows, scaleRow(res, ag, m))
		}
	}
	if u := res.Update; u != nil {
		row := budgetRow{target: fmt.Sprintf("reconciler: one changed service applied in < %s (median) at N=%s", budgetUpdate, fmtInt(budgetUpdateNeedN))}
		var parts []string
		ok := true
		for _, o := range u.Ops[:3] {
			med := o.quantile(0.5)
			ok = ok && med < budgetUpdate
			parts = append(parts, fmt.Sprintf("%s %.1f µs", strings.TrimPrefix(o.Name, "reconciler "), us(med)))
		}
		row.measured = strings.Join(parts, ", ")
		if u.N != budgetUpdateNeedN {
			row.measured += fmt.Sprintf(" (at N=%s)", fmtInt(u.N))
			row.status = "n/a"
		} else {
			row.status = met(ok)
		}
		rows = append(rows, row)
	}
	row := budgetRow{target: fmt.Sprintf("agent RSS < %d MiB with N=%s services programmed", budgetRSS>>20, fmtInt(budgetRSSN)),
		measured: fmt.Sprintf("not measured (needs N=%s)", fmtInt(budgetRSSN)), status: "n/a"}
	for _, nr := range res.PerN {
		if nr.N == budgetRSSN {
			// Judged on the larger of the two readings.
			rss := max(nr.RSS, nr.RSSAfter)
			row.measured = fmt.Sprintf("%s once programmed, %s after the traffic (peak %s)", mib(nr.RSS), mib(nr.RSSAfter), mib(nr.HWM))
			row.status = met(rss < budgetRSS)
		}
	}
	return append(rows, row)
}

func markdown(raw *results) string {
	// The report is per repetition: each one's legs pooled.
	pooled := *raw
	pooled.Points = poolLegs(raw.Points)
	res := &pooled
	cfg := res.Cfg
	ag := aggregate(res.Points, cfg)
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }

	p("# Datapath performance budget\n\n")
	p("Generated by `make bench-datapath`; this run: `%s`.\n", strings.TrimSpace(cfg.Command))
	p("Do not edit by hand: run it again. Raw numbers: [datapath-traffic.csv](datapath-traffic.csv) (one row per traffic round) and [datapath.csv](datapath.csv) (agent and map updates).\n\n")
	p("| | |\n|---|---|\n")
	p("| date | %s (took %s) |\n", res.Start.UTC().Format("2006-01-02 15:04 MST"), res.End.Sub(res.Start).Round(time.Second))
	p("| load average | %s at start, %s at end |\n", res.LoadStart, res.LoadEnd)
	if res.QuietBusy >= 0 {
		p("| machine before measuring | %.0f %% of all CPUs busy with other work (waited %s for it to fall to %.0f %%, at most %s) |\n",
			res.QuietBusy, res.Waited.Round(time.Second), quietBusy, cfg.WaitIdle)
	}
	p("| machine | %s, %d CPUs (nproc), %s RAM |\n", res.Machine.CPU, res.Machine.NumCPU, res.Machine.MemTotal)
	p("| kernel | %s |\n", res.Machine.Kernel)
	p("| go | %s |\n", res.Machine.GoVersion)
	p("| settings | N = %s; workers %s; new connections %s per mode and repetition (two windows of %s, ABBA with the baseline), %s per latency point, %s warm-up before each window; %d repetition(s), median reported (side by side: %d); %d kept-alive connections per worker |\n",
		joinInts(cfg.Ns), joinInts(cfg.Workers), cfg.Duration, cfg.Duration/2, cfg.LatDuration, cfg.Warmup, cfg.Reps, cfg.PairedReps, cfg.Pool)
	p("| agents | %s |\n", agentSettings(cfg))
	p("| TCP metrics | not saved (net.ipv4.tcp_no_metrics_save=1) in every namespace of the run: the client's kernel would otherwise keep and look up one entry per destination address, 50,000 through the VIPs at N=50,000, a cost of the client, not of the datapath |\n\n")

	p("## Budget\n\n")
	p("Reported, not asserted: a benchmark never fails on a number.\n\n")
	p("| target | measured | status |\n|---|---|---|\n")
	for _, r := range budget(res, ag) {
		p("| %s | %s | %s |\n", r.target, r.measured, r.status)
	}
	p("\n")

	p("## New connections\n\n")
	p("Connect, send 16 bytes, read the 64-byte reply until the server closes, close; each connection to one of the N services at random. ")
	p("*range*: lowest and highest rate over the repetitions (conn/s is their median). ")
	p("*vs direct*: rate / rate of the same client to the backend itself (tc: `direct`, sock: `direct-node`), taken repetition by repetition: median, and range in parentheses. ")
	p("Each repetition runs a mode and its baseline as an ABBA block (baseline, mode, mode, baseline; the mirror in every other repetition), and a repetition's rate is its two windows pooled, so a drift linear over the block cancels from the ratio. ")
	p("*vs N=1*: rate / the same mode's rate at N=1, blocks minutes apart (for the budget, see the side-by-side section below). Latency is of the whole connection. ")
	p("*SYN retrans*: SYNs the kernel sent again during the run (TcpExt TCPSynRetrans, all namespaces; median over repetitions): each stalls one connection until its SYN goes out again. ")
	p("*client CPU*: the load generator's getrusage in %% of one core (user part in parentheses; system time includes the kernel's network path it drives). ")
	p("*server CPU*: the server child process over the generator's life; *agent CPU* likewise; *machine busy*: all CPUs from /proc/stat, 100 %% = every CPU busy; ")
	p("*other CPU*: busy time none of these used, in %% of one core: other processes on the machine, or kernel work (softirq) outside them. Much of it means the numbers are disturbed.\n\n")
	for _, w := range cfg.Workers {
		p("### %d worker(s)\n\n", w)
		p("| N | mode | conn/s | range | vs direct | vs N=1 | p50 µs | p99 µs | SYN retrans | client CPU | server CPU | agent CPU | machine busy | other CPU | errors |\n")
		p("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, n := range cfg.Ns {
			for _, m := range modes {
				a := ag[aggKey{n, m.Name, loadgen.KindConn, w}]
				if a == nil {
					continue
				}
				spread := rounds.Of(slices.Collect(maps.Values(perRep(res.Points, n, m.Name, w))))
				vsDirect := "–"
				if m.Base != "" {
					vsDirect = vsBase(res.Points, n, m, w).Percent()
				}
				p("| %s | %s | %s | %s–%s | %s | %s | %.1f | %.1f | %.0f | %.0f %% (%.0f %%) | %.0f %% | %.1f %% | %.0f %% | %.0f %% | %d |\n",
					fmtInt(n), m.Name, fmtInt(int(math.Round(a.Rate))), fmtInt(int(math.Round(spread.Min))), fmtInt(int(math.Round(spread.Max))),
					vsDirect, ratio(a.Rate, rateOf(ag, 1, m.Name, loadgen.KindConn, w)),
					a.P50, a.P99, a.SynRetrans, a.ClientCPU, a.ClientUserPct, a.ServerCPU, a.AgentCPU, a.MachineBusy, a.OtherCPU, a.Errors+a.Drops)
			}
		}
		p("\n")
	}
	pairedSection(p, res, ag)

	p("## Requests on kept-alive connections\n\n")
	p("Each worker holds %d connections opened to random services and sends one 16-byte request at a time on a random one, waiting for the 64-byte reply. ", cfg.Pool)
	p("*Δp50*: p50 minus the direct path's p50.\n\n")
	p("| N | mode | workers | req/s | p50 µs | p99 µs | Δp50 µs | client CPU | other CPU | errors |\n")
	p("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, n := range cfg.Ns {
		for _, w := range cfg.Workers {
			for _, m := range modes {
				a := ag[aggKey{n, m.Name, loadgen.KindLatency, w}]
				if a == nil {
					continue
				}
				delta := ""
				if base := ag[aggKey{n, m.Base, loadgen.KindLatency, w}]; m.Base != "" && base != nil {
					delta = fmt.Sprintf("%+.1f", a.P50-base.P50)
				}
				p("| %s | %s | %d | %s | %.1f | %.1f | %s | %.0f %% | %.0f %% | %d |\n",
					fmtInt(n), m.Name, w, fmtInt(int(math.Round(a.Rate))), a.P50, a.P99, delta, a.ClientCPU, a.OtherCPU, a.Errors+a.Drops)
			}
		}
	}
	p("\n")

	if u := res.Update; u != nil {
		p("## Map updates with %s services\n\n", fmtInt(u.N))
		p("The datapath loaded on its own bpffs directory (not attached), %s services programmed through `loadbalancer.Table` and `Reconciler` into the real kernel maps, ", fmtInt(u.N))
		p("then each change timed alone, as the agent applies it (Upsert/Delete + Sync). ")
		p("Programming all %s from empty: Upsert %s, first Sync %s. ", fmtInt(u.N), u.UpsertAll.Round(time.Millisecond), u.InitialSync.Round(time.Millisecond))
		p("Go heap the Table and Reconciler keep alive for them: %s (the agent's steady state, next to its RSS below).\n\n", mib(u.LiveHeap))
		p("| operation | median µs | p99 µs | mean µs | max µs | count | what |\n|---|---:|---:|---:|---:|---:|---|\n")
		for _, o := range u.Ops {
			p("| %s | %.1f | %.1f | %.1f | %.1f | %d | %s |\n", o.Name, us(o.quantile(0.5)), us(o.quantile(0.99)), us(o.mean()), us(o.max()), len(o.Samples), o.What)
		}
		if u.FrontendsLeft != u.N {
			p("\n**Check failed**: the map held %d frontends after the changes, want %d.\n", u.FrontendsLeft, u.N)
		}
		p("\n")
	}

	progCostSection(p, res)
	progTrafficSection(p, res)

	p("## Agent start-up and memory\n\n")
	p("A fresh agent (default map sizes but fp_ct's, see the settings) per N, started on the services file. *parse*: `servicefile.Parse` of that file in the harness process (time, bytes allocated). ")
	p("*programmed*: from exec to the agent's first \"datapath programmed\" log line; *sync*: the time that line reports. ")
	p("RSS is VmRSS once programmed / after the traffic; peak is VmHWM. Map memory is the kernel's memlock accounting summed over the pinned maps (`fastpathctl status`), once programmed / after the traffic.\n\n")
	p("| N | file | parse | parse alloc | programmed | sync | RSS | RSS after traffic | peak RSS | map memory | map memory after traffic |\n")
	p("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, nr := range res.PerN {
		p("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", fmtInt(nr.N), mib(uint64(nr.FileBytes)),
			dur(nr.Parse), mib(nr.ParseAlloc), dur(nr.Ready), dur(nr.Took), mib(nr.RSS), mib(nr.RSSAfter), mib(nr.HWM), mib(nr.MapMem), mib(nr.MapMemEnd))
	}
	p("\n")
	if len(res.PerN) > 0 {
		last := res.PerN[len(res.PerN)-1]
		p("Maps after the traffic at N=%s:\n\n| map | type | entries | max | memory |\n|---|---|---:|---:|---:|\n", fmtInt(last.N))
		for _, m := range last.Maps {
			p("| %s | %s | %s | %s | %s |\n", m.Name, m.Type, fmtInt(m.Entries), fmtInt(m.MaxEntries), mib(m.MemoryBytes))
		}
		p("\n")
	}

	p("## Datapath counters\n\n")
	p("Packets counted by the datapath over all traffic of each N (probes, warm-ups and windows). Drops should be zero.\n\n")
	p("| N | %s |\n|---:|%s\n", strings.Join(ctl.CounterNames, " | "), strings.Repeat("---:|", len(ctl.CounterNames)))
	for _, nr := range res.PerN {
		var cells []string
		for _, name := range ctl.CounterNames {
			cells = append(cells, fmtInt(int(nr.Counters[name])))
		}
		p("| %s | %s |\n", fmtInt(nr.N), strings.Join(cells, " | "))
	}
	p("\n")

	if warn := warnings(res, ag); len(warn) > 0 {
		p("## Warnings\n\n")
		for _, w := range warn {
			p("- %s\n", w)
		}
		p("\n")
	}

	p("## Method\n\n")
	p("- Topology (`internal/nettopo` Star): a node namespace running the real `fastpath-agent` (built from this tree, default map sizes but fp_ct's, see the settings, ")
	p("`--interfaces` on every node-side veth, `--cgroup` on a cgroup v2 subtree made for the run), a client namespace, and %d backend namespaces with %d server ports each: ", numBackendHosts, numBackendPorts)
	p("service i is ClusterIP 10.96.0.0/12 + i + 2, port 80/TCP, with one backend, round-robin over the %d backend address:port pairs; ", numBackendHosts*numBackendPorts)
	p("with fewer services than that, a backend on every backend host instead (on one port), so at every N the connections spread over all %d backend namespaces, as do the direct client's, which picks among the same backends. ", numBackendHosts)
	p("(Before 2026-12-06 N=1's one service had one backend: its connections, direct ones too, all went to one server in one namespace.)\n")
	p("- Modes:\n")
	for _, m := range modes {
		p("  - `%s`: %s\n", m.Name, m.Desc)
	}
	p("- The load generator is this harness started again as a child process (in the cgroup for `sock` and `direct-node`), each worker a goroutine locked to an OS thread that enters the client's namespace; ")
	p("blocking sockets driven by raw syscalls (socket/connect/write/read/close) and a precomputed list of the N destinations. Its CPU is getrusage of that process over the window. ")
	p("The servers are one child process of the harness: an epoll event loop of raw syscalls, one locked thread per CPU ([loadgen](../../test/bench/internal/loadgen)); *server CPU* is that process's CPU while the load generator ran. ")
	p("Client, servers, kernel and agent share the %d CPUs: rates are of the whole machine, and ratios between modes are the meaningful numbers.\n", res.Machine.NumCPU)
	p("- The server closes after its reply, so TIME_WAIT stays on the backends and client ports are reused at once. ")
	p("The datapath's conntrack map is an LRU: sized below the run's rate of new connections (as with `-ct-max 0`, the agent's default on this machine) it fills and evicts, as it would under real load.\n")
	p("- Within each repetition the modes are interleaved (new connections: each mode in an ABBA block with its baseline, mirrored every other repetition; requests: rotated between repetitions), so drift affects all alike; every mode is probed first and must carry traffic through the load balancer (datapath counters). *vs direct* divides rates measured back to back in the same repetition, and its range shows how far single repetitions disagree: a range wider than the gap to the budget means this run cannot tell.\n")
	p("- The program's own cost per packet against N, without the rest of the stack: the table *fp_tc_lb per packet* above; a tuple clash's SYN: `go test -run '^$' -bench TupleClash ./internal/datapath/tclb_test` (prog-ns/op, the kernel's BPF_PROG_TEST_RUN time).\n")
	return b.String()
}

func warnings(res *results, ag map[aggKey]*agg) []string {
	var out []string
	keys := make([]aggKey, 0, len(ag))
	for k := range ag {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b aggKey) int {
		if a.N != b.N {
			return a.N - b.N
		}
		return strings.Compare(a.Mode+a.Kind+strconv.Itoa(a.Workers), b.Mode+b.Kind+strconv.Itoa(b.Workers))
	})
	for _, k := range keys {
		a := ag[k]
		if a.Failed > 0 {
			out = append(out, fmt.Sprintf("N=%s %s %s %d worker(s): %d of %d repetition(s) failed (see the run's log)",
				fmtInt(k.N), k.Mode, k.Kind, k.Workers, a.Failed, a.Failed+a.Reps))
		}
		if a.Errors > 0 || a.Drops > 0 {
			out = append(out, fmt.Sprintf("N=%s %s %s %d worker(s): %d errors, %d datapath drops over %d repetition(s) (see the CSV)",
				fmtInt(k.N), k.Mode, k.Kind, k.Workers, a.Errors, a.Drops, a.Reps))
		}
	}
	busy, worst := 0, 0.0
	for _, k := range keys {
		if a := ag[k]; a.OtherCPU > 25 {
			busy++
			worst = max(worst, a.OtherCPU)
		}
	}
	if busy > 0 {
		out = append(out, fmt.Sprintf("the machine was not quiet: in %d of %d measurement groups something else used more than 25 %% of a core (median; up to %.0f %%), see the *other CPU* columns; compare modes only within one N and worker count",
			busy, len(keys), worst))
	}
	for _, k := range keys {
		a := ag[k]
		if k.Kind != loadgen.KindConn || a.SynRetrans == 0 {
			continue
		}
		out = append(out, fmt.Sprintf("N=%s %s %d worker(s): %.0f SYN retransmissions per run (median), %.0f SYNs dropped by TIME_WAIT sockets for an old timestamp (PAWS)",
			fmtInt(k.N), k.Mode, k.Workers, a.SynRetrans, a.PAWSTimewait))
	}
	if pawsOnlyBehindNAT(ag) {
		out = append(out, "SYN retransmissions happen behind the per-packet load balancer only, and match SYNs that backends' TIME_WAIT sockets dropped for an old timestamp (PAWS). "+
			"Services share backends, so the DNAT maps client:port -> VIP-a and client:port -> VIP-b onto the same client:port -> backend tuple while the backend still holds it in TIME_WAIT; "+
			"the client's TCP timestamps are offset per (source, destination) pair, and the destination it knows is the VIP, so the timestamps of the two connections are unrelated and the backend drops the new SYN as old. "+
			"The TIME_WAIT socket answers with an ACK, the client answers that with a RST (which ends the TIME_WAIT) and sends its SYN again after the minimum retransmission timeout (2 jiffies, 8 ms at HZ=250): "+
			"about 10 ms per collision, which is the p99 of these runs and, at this rate of collisions, a large part of the lost throughput. Direct connections and the socket load balancer (which connects the socket to the backend address itself) do not have this; a NAT that moved the source port on such a clash would not either.")
	}
	for _, l := range res.PairedWarnings {
		out = append(out, fmt.Sprintf("side by side: agent logged: `%s`", strings.ReplaceAll(l, "`", "'")))
	}
	for _, nr := range res.PerN {
		for _, l := range nr.AgentWarnings {
			out = append(out, fmt.Sprintf("N=%s: agent logged: `%s`", fmtInt(nr.N), strings.ReplaceAll(l, "`", "'")))
		}
		for name, v := range nr.Counters {
			if strings.HasPrefix(name, "drop_") && v > 0 {
				out = append(out, fmt.Sprintf("N=%s: datapath counter %s = %d", fmtInt(nr.N), name, v))
			}
		}
	}
	return out
}

// pawsOnlyBehindNAT reports whether new connections through the TC load
// balancer saw PAWS drops in TIME_WAIT while no direct or socket-LB run did.
func pawsOnlyBehindNAT(ag map[aggKey]*agg) bool {
	tc, others := 0.0, 0.0
	for k, a := range ag {
		if k.Kind != loadgen.KindConn {
			continue
		}
		if k.Mode == "tc" {
			tc += a.PAWSTimewait
		} else {
			others += a.SynRetrans + a.PAWSTimewait
		}
	}
	return tc > 0 && others == 0
}

// perRep is one mode's new-connection rate in each repetition of the per-N
// blocks.
func perRep(pts []point, n int, mode string, w int) map[int]float64 {
	return perRepOf(pts, loadgen.KindConn, n, mode, w)
}

// perRepOf is one mode's rate of kind in each repetition.
func perRepOf(pts []point, kind string, n int, mode string, w int) map[int]float64 {
	out := map[int]float64{}
	for _, p := range pts {
		if p.N == n && p.Mode == mode && p.Kind == kind && p.Workers == w && p.Rep > 0 && p.Err == "" {
			out[p.Rep] = p.Rate
		}
	}
	return out
}

// vsBase is a mode's rate over its direct baseline's, repetition by
// repetition.
func vsBase(pts []point, n int, m modeSpec, w int) rounds.Spread {
	return rounds.Ratio(perRep(pts, n, m.Name, w), perRep(pts, n, m.Base, w))
}

func rateOf(ag map[aggKey]*agg, n int, mode, kind string, w int) float64 {
	if a := ag[aggKey{n, mode, kind, w}]; a != nil {
		return a.Rate
	}
	return 0
}

func ratio(a, b float64) string {
	if b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f %%", 100*a/b)
}

func dur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.1f ms", ms(d))
	}
	return fmt.Sprintf("%.1f µs", us(d))
}

func fmtInt(v int) string {
	s := strconv.Itoa(v)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmtInt(x)
	}
	return strings.Join(s, ", ")
}

// scaleRow is the budget's "rate at the largest N vs N=1" for mode m: from
// the side-by-side phase (paired.go), repetition by repetition, when the
// run has it; the per-N blocks' ratio, minutes apart, follows as context
// with the direct baseline's own.
func scaleRow(res *results, ag map[aggKey]*agg, m modeSpec) budgetRow {
	cfg := res.Cfg
	lo, hi, ok := pairedNs(cfg.Ns)
	if !ok {
		lo, hi = 1, budgetScaleN
	}
	row := budgetRow{target: fmt.Sprintf("%s: rate at N=%s ≥ %.0f %% of rate at N=1", m.Name, fmtInt(hi), 100*budgetScale)}
	var paired, blocks []string
	allMet := true
	for _, w := range cfg.Workers {
		r := rounds.Ratio(perRepOf(res.Points, kindPaired, hi, m.Name, w), perRepOf(res.Points, kindPaired, lo, m.Name, w))
		if r.N > 0 {
			allMet = allMet && r.Median >= budgetScale
			paired = append(paired, fmt.Sprintf("%s (%d worker(s))", r.Percent(), w))
		}
		a, b := rateOf(ag, hi, m.Name, loadgen.KindConn, w), rateOf(ag, lo, m.Name, loadgen.KindConn, w)
		da, db := rateOf(ag, hi, m.Base, loadgen.KindConn, w), rateOf(ag, lo, m.Base, loadgen.KindConn, w)
		if a > 0 && b > 0 && da > 0 && db > 0 {
			blocks = append(blocks, fmt.Sprintf("%s (%s itself %s)", ratio(a, b), m.Base, ratio(da, db)))
		}
	}
	switch {
	case len(paired) > 0:
		row.measured = "side by side, per repetition: " + strings.Join(paired, ", ")
		row.status = met(allMet)
	case res.PairedErr != "":
		row.measured, row.status = "side by side: not measured ("+res.PairedErr+")", "n/a"
	default:
		row.measured, row.status = fmt.Sprintf("not measured (needs N=1 and N=%s)", fmtInt(hi)), "n/a"
	}
	if len(blocks) > 0 {
		row.measured += "; per-N blocks minutes apart: " + strings.Join(blocks, ", ")
	}
	return row
}

// agentSettings says how the agents were started beyond the harness's
// own flags: the conntrack size the run gave them, and any flags added.
func agentSettings(cfg config) string {
	ct := "conntrack (fp_ct) sized by the agent from the node's memory"
	if cfg.CTMax > 0 {
		ct = fmt.Sprintf("conntrack (fp_ct) of %s entries (-ct-max), sized for the run's rate of new connections as docs/install.md says", fmtInt(cfg.CTMax))
	}
	if len(cfg.AgentArgs) > 0 {
		ct += fmt.Sprintf("; more flags: `%s`", strings.Join(cfg.AgentArgs, " "))
	}
	return ct
}
