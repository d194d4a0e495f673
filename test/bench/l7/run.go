package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/fastpath-net/fastpath/test/bench/internal/procstat"
)

// CPUs: the proxy alone on one, the upstream and the load generator on
// the other.
const (
	proxyCPU = "0"
	otherCPU = "1"
)

// child is a running process of this binary in a role.
type child struct {
	cmd  *exec.Cmd
	addr string
}

func startChild(ctx context.Context, role, cpu string, args ...string) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, "taskset", append([]string{"-c", cpu, exe}, args...)...)
	cmd.Env = append(os.Environ(), roleEnv+"="+role, "GOMAXPROCS=1")
	cmd.Stderr = os.Stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("%s: no address: %w", role, err)
	}
	return &child{cmd: cmd, addr: strings.TrimSpace(line)}, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) stop() {
	c.cmd.Process.Signal(syscall.SIGTERM)
	c.cmd.Wait()
}

func runLoadgen(ctx context.Context, target string, conns int, d time.Duration) (*loadResult, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, "taskset", "-c", otherCPU, exe,
		"-target", target, "-conns", fmt.Sprint(conns), "-duration", d.String())
	cmd.Env = append(os.Environ(), roleEnv+"=loadgen", "GOMAXPROCS=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("loadgen: %w", err)
	}
	var res loadResult
	if err := json.Unmarshal(out, &res); err != nil {
		return nil, fmt.Errorf("loadgen output %q: %w", out, err)
	}
	return &res, nil
}

// point is one measured (path, connections) run.
type point struct {
	path                  string // "direct" or "proxy"
	conns                 int
	rate                  float64 // requests/s
	p50, p99              time.Duration
	errors                int64
	proxyCPU, upstreamCPU float64 // % of one core over the run
	loadgenCPU            float64
	otherCPU              float64       // % of one core used by processes not in the benchmark
	proxyPerReq           time.Duration // proxy CPU time per request
}

func measure(ctx context.Context, cfg config, up, proxy *child, path string, conns int) (point, error) {
	target := up.addr
	if path == "proxy" {
		target = proxy.addr
	}
	pc0, _ := procstat.CPU(proxy.pid())
	uc0, _ := procstat.CPU(up.pid())
	cs0, _ := procstat.ReadCPUStat()
	res, err := runLoadgen(ctx, target, conns, cfg.duration)
	if err != nil {
		return point{}, err
	}
	cs1, _ := procstat.ReadCPUStat()
	pc1, _ := procstat.CPU(proxy.pid())
	uc1, _ := procstat.CPU(up.pid())
	// The CPU deltas include the load generator's warm-up and start; over
	// a run of seconds that is noise, and it only overstates CPU.
	secs := res.Elapsed.Seconds()
	p := point{
		path: path, conns: conns, p50: res.P50, p99: res.P99, errors: res.Errors,
		rate:        float64(res.Requests) / secs,
		proxyCPU:    100 * pc1.Sub(pc0).Total().Seconds() / secs,
		upstreamCPU: 100 * uc1.Sub(uc0).Total().Seconds() / secs,
		loadgenCPU:  100 * res.CPU.Seconds() / secs,
	}
	busy, _, _ := procstat.BusyPct(cs0, cs1)
	p.otherCPU = max(0, busy*float64(runtime.NumCPU())-p.proxyCPU-p.upstreamCPU-p.loadgenCPU)
	if path == "proxy" && res.Requests > 0 {
		p.proxyPerReq = pc1.Sub(pc0).Total() / time.Duration(res.Requests)
	}
	return p, nil
}

// median picks, per (path, conns), the repetition with the median rate.
func median(points []point) []point {
	type key struct {
		path  string
		conns int
	}
	groups := map[key][]point{}
	var order []key
	for _, p := range points {
		k := key{p.path, p.conns}
		if groups[k] == nil {
			order = append(order, k)
		}
		groups[k] = append(groups[k], p)
	}
	var out []point
	for _, k := range order {
		g := groups[k]
		slices.SortFunc(g, func(a, b point) int { return int(a.rate - b.rate) })
		out = append(out, g[len(g)/2])
	}
	return out
}

// idleRSS opens n keep-alive connections through a fresh proxy, sends one
// request on each, leaves them idle and reads the proxy's RSS.
func idleRSS(ctx context.Context, up *child, n int) (before, after, hwm uint64, err error) {
	proxy, err := startChild(ctx, "proxy", proxyCPU, up.addr)
	if err != nil {
		return 0, 0, 0, err
	}
	defer proxy.stop()
	raiseNoFile()
	time.Sleep(200 * time.Millisecond)
	before, _, _ = procstat.Mem(proxy.pid())
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, err := net.Dial("tcp", proxy.addr)
		if err != nil {
			return 0, 0, 0, err
		}
		conns = append(conns, c)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if err := roundTrip(c, bufio.NewReader(c)); err != nil {
			return 0, 0, 0, fmt.Errorf("idle connection %d: %w", len(conns), err)
		}
	}
	time.Sleep(2 * time.Second) // let the runtime return what it freed
	after, hwm, err = procstat.Mem(proxy.pid())
	return before, after, hwm, err
}

func run(ctx context.Context, cfg config) error {
	started := time.Now()
	loadStart := procstat.LoadAvg()
	up, err := startChild(ctx, "upstream", otherCPU)
	if err != nil {
		return err
	}
	defer up.stop()
	proxy, err := startChild(ctx, "proxy", proxyCPU, up.addr)
	if err != nil {
		return err
	}
	var points []point
	for rep := range cfg.reps {
		for _, n := range cfg.conns {
			for _, path := range []string{"direct", "proxy"} {
				p, err := measure(ctx, cfg, up, proxy, path, n)
				if err != nil {
					proxy.stop()
					return err
				}
				fmt.Fprintf(os.Stderr, "rep %d %-6s conns=%-3d %8.0f req/s p50 %v p99 %v proxy %.0f%% upstream %.0f%% loadgen %.0f%% others %.0f%%\n",
					rep+1, path, n, p.rate, p.p50, p.p99, p.proxyCPU, p.upstreamCPU, p.loadgenCPU, p.otherCPU)
				points = append(points, p)
			}
		}
	}
	proxy.stop()
	rssBefore, rssIdle, hwm, err := idleRSS(ctx, up, cfg.idle)
	if err != nil {
		return fmt.Errorf("idle RSS: %w", err)
	}
	fmt.Fprintf(os.Stderr, "proxy RSS %d MiB at start, %d MiB with %d idle connections (peak %d MiB)\n", rssBefore>>20, rssIdle>>20, cfg.idle, hwm>>20)
	r := report{cfg: cfg, points: median(points), rssBefore: rssBefore, rssIdle: rssIdle, rssPeak: hwm,
		started: started, took: time.Since(started), loadStart: loadStart, loadEnd: procstat.LoadAvg(),
		machine: procstat.DescribeMachine(), args: strings.Join(os.Args[1:], " ")}
	if err := os.MkdirAll(cfg.out, 0o755); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(cfg.out, "l7.md"))
	if err != nil {
		return err
	}
	defer f.Close()
	return r.write(f)
}

type report struct {
	cfg                         config
	points                      []point
	rssBefore, rssIdle, rssPeak uint64
	started                     time.Time
	took                        time.Duration
	loadStart, loadEnd, args    string
	machine                     procstat.Machine
}

func (r *report) find(path string, conns int) (point, bool) {
	for _, p := range r.points {
		if p.path == path && p.conns == conns {
			return p, true
		}
	}
	return point{}, false
}

func us(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d)/1e3) }

func status(ok bool) string {
	if ok {
		return "met"
	}
	return "**not met**"
}

func (r *report) write(w io.Writer) error {
	fmt.Fprintf(w, "# L7 proxy performance budget\n\n")
	fmt.Fprintf(w, "Generated by `make bench-l7`; this run: `go run ./test/bench/l7 %s`.\nDo not edit by hand: run it again.\n\n", r.args)
	fmt.Fprintf(w, "| | |\n|---|---|\n")
	fmt.Fprintf(w, "| date | %s (took %s) |\n", r.started.UTC().Format("2006-01-02 15:04 MST"), r.took.Round(time.Second))
	fmt.Fprintf(w, "| load average | %s at start, %s at end |\n", r.loadStart, r.loadEnd)
	fmt.Fprintf(w, "| machine | %s, %d CPUs, %s RAM, %s, %s |\n", r.machine.CPU, r.machine.NumCPU, r.machine.MemTotal, r.machine.Kernel, r.machine.GoVersion)
	fmt.Fprintf(w, "| setup | loopback; proxy pinned to CPU %s with GOMAXPROCS=1; upstream (minimal keep-alive HTTP/1.1 server) and load generator (closed loop, keep-alive, GOMAXPROCS=1) share CPU %s |\n", proxyCPU, otherCPU)
	fmt.Fprintf(w, "| request | `GET /api/v1/items?page=2` with 4 header fields, judged against 2 allow rules and 1 deny rule (regexes on method, path, host and a header), 12-byte response |\n")
	fmt.Fprintf(w, "| settings | %s per point, %d repetition(s), median by rate reported; %d idle connections for RSS |\n\n", r.cfg.duration, r.cfg.reps, r.cfg.idle)

	fmt.Fprintf(w, "## Budget\n\nReported, not asserted: a benchmark never fails on a number.\n\n| target | measured | status |\n|---|---|---|\n")
	for _, n := range r.cfg.conns {
		d, ok1 := r.find("direct", n)
		p, ok2 := r.find("proxy", n)
		if !ok1 || !ok2 {
			continue
		}
		added := p.p50 - d.p50
		fmt.Fprintf(w, "| %d connection(s): proxy adds < 150 µs at p50 | %s (%s vs %s) | %s |\n", n, us(added), us(p.p50), us(d.p50), status(added < 150*time.Microsecond))
		ratio := 100 * p.rate / d.rate
		fmt.Fprintf(w, "| %d connection(s): proxied req/s ≥ 50 %% of direct, proxy on one core | %.0f %% (%.0f vs %.0f req/s) | %s |\n", n, ratio, p.rate, d.rate, status(ratio >= 50))
	}
	for _, n := range r.cfg.conns {
		d, ok1 := r.find("direct", n)
		p, ok2 := r.find("proxy", n)
		if ok1 && ok2 && p.proxyPerReq > 0 {
			capacity := float64(time.Second) / float64(p.proxyPerReq)
			fmt.Fprintf(w, "| %d connection(s), for reading the above: proxy capacity on one core (1 s / proxy CPU per request) vs direct req/s | %.0f vs %.0f req/s (%.0f %%) | – |\n", n, capacity, d.rate, 100*capacity/d.rate)
		}
	}
	fmt.Fprintf(w, "| proxy RSS < 64 MiB with %d idle keep-alive connections | %.1f MiB (%.1f MiB before them, peak %.1f MiB) | %s |\n\n",
		r.cfg.idle, mib(r.rssIdle), mib(r.rssBefore), mib(r.rssPeak), status(r.rssIdle < 64<<20))

	fmt.Fprintf(w, "## Requests\n\nCPU columns are %% of one core during the point; \"proxy CPU / request\" is the proxy's CPU time divided by the requests it served, the cost that bounds its rate on one core.\n\n")
	fmt.Fprintf(w, "| connections | path | req/s | p50 | p99 | errors | proxy CPU | upstream CPU | load generator CPU | other processes' CPU | proxy CPU / request |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, p := range r.points {
		perReq := "–"
		if p.path == "proxy" {
			perReq = fmt.Sprintf("%.1f µs", float64(p.proxyPerReq)/1e3)
		}
		fmt.Fprintf(w, "| %d | %s | %.0f | %s | %s | %d | %.0f %% | %.0f %% | %.0f %% | %.0f %% | %s |\n",
			p.conns, p.path, p.rate, us(p.p50), us(p.p99), p.errors, p.proxyCPU, p.upstreamCPU, p.loadgenCPU, p.otherCPU, perReq)
	}
	fmt.Fprintf(w, "\n## Reading it\n\n")
	fmt.Fprintf(w, "- The direct path runs the load generator and the upstream on one core; proxied, the proxy adds a second core. When the load generator and upstream saturate CPU %s, the proxied rate is bounded by them, not by the proxy: the proxy CPU column and \"proxy CPU / request\" say how much headroom the proxy has (one core serves about 1 s / (CPU per request) requests/s).\n", otherCPU)
	fmt.Fprintf(w, "- The machine is shared (see the load average and \"other processes' CPU\", in %% of one core of %d): when others keep the CPUs busy, every process here waits for a CPU at each wake-up, and the proxied path has two more wake-ups per request (request in, response in), on a second CPU. Latency and rate then measure the machine's queue more than the proxy; \"proxy CPU / request\" is the least disturbed figure.\n", runtime.NumCPU())
	return nil
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }
