package main

import (
	"bufio"
	"bytes"
	"cmp"
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
	"github.com/fastpath-net/fastpath/test/internal/nsproc"
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

// command is this binary in role, pinned to cpu with GOMAXPROCS=1.
func command(ctx context.Context, role, cpu string, args ...string) (*exec.Cmd, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, "taskset", append([]string{"-c", cpu, exe}, args...)...)
	cmd.Env = append(os.Environ(), roleEnv+"="+role, "GOMAXPROCS=1")
	cmd.Stderr = os.Stderr
	return cmd, nil
}

// start starts cmd in the namespace of th (nil: this process's own). A
// child started on a thread dies with it (Pdeathsig), so a harness that
// is killed leaves no process behind in the namespaces it made.
func start(th *nsproc.Thread, cmd *exec.Cmd) (err error) {
	if th == nil {
		return cmd.Start()
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	th.Do(func() { err = cmd.Start() })
	return err
}

// profileEnvOf is the environment that makes a proxy write its CPU
// profile to path ("": none).
func profileEnvOf(path string) []string {
	if path == "" {
		return nil
	}
	abs, _ := filepath.Abs(path)
	return []string{profileEnv + "=" + abs}
}

// startChild starts this binary in role, with env added to its
// environment, and waits for the address it announces.
func startChild(ctx context.Context, th *nsproc.Thread, env []string, role, cpu string, args ...string) (*child, error) {
	cmd, err := command(ctx, role, cpu, args...)
	if err != nil {
		return nil, err
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := start(th, cmd); err != nil {
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

// runLoadgen runs one load generator in th's namespace (nil: this one's);
// rate > 0 paces it.
func runLoadgen(ctx context.Context, th *nsproc.Thread, target string, conns int, d time.Duration, rate float64) (*loadResult, error) {
	cmd, err := command(ctx, "loadgen", otherCPU,
		"-target", target, "-conns", fmt.Sprint(conns), "-duration", d.String(), "-rate", fmt.Sprint(rate))
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := start(th, cmd); err != nil {
		return nil, fmt.Errorf("loadgen: %w", err)
	}
	if err := cmd.Wait(); err != nil {
		return nil, fmt.Errorf("loadgen: %w", err)
	}
	var res loadResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		return nil, fmt.Errorf("loadgen output %q: %w", out.Bytes(), err)
	}
	return &res, nil
}

// Paths: through the node's datapath at L4 only and through the L7 proxy;
// on loopback without and with the proxy (secondary).
const (
	pathL4     = "L4"
	pathL7     = "L7"
	pathDirect = "loopback direct"
	pathProxy  = "loopback proxy"
)

// Modes of load.
const (
	closedLoop = "closed"
	paced      = "paced"
)

// point is one measured (path, connections, mode) run.
type point struct {
	path                  string
	conns                 int
	mode                  string
	offered               float64 // paced: requests/s asked for
	rate                  float64 // requests/s
	p50, p99, lag         time.Duration
	errors                int64
	proxyCPU, upstreamCPU float64 // % of one core over the run
	loadgenCPU            float64
	otherCPU              float64       // % of one core used by processes not in the benchmark
	proxyPerReq           time.Duration // proxy CPU time per request
}

// setup is one arrangement of upstream and proxy, and where the load
// generator runs and dials for each of its paths.
type setup struct {
	up, proxy *child
	gen       *nsproc.Thread // nil: this namespace
	target    map[string]string
}

func measure(ctx context.Context, cfg config, s *setup, path string, conns int, rate float64) (point, error) {
	pc0, _ := procstat.CPU(s.proxy.pid())
	uc0, _ := procstat.CPU(s.up.pid())
	cs0, _ := procstat.ReadCPUStat()
	res, err := runLoadgen(ctx, s.gen, s.target[path], conns, cfg.duration, rate)
	if err != nil {
		return point{}, err
	}
	cs1, _ := procstat.ReadCPUStat()
	pc1, _ := procstat.CPU(s.proxy.pid())
	uc1, _ := procstat.CPU(s.up.pid())
	// The CPU deltas include the load generator's warm-up and start; over
	// a run of seconds that is noise, and it only overstates CPU.
	secs := res.Elapsed.Seconds()
	p := point{
		path: path, conns: conns, mode: closedLoop, offered: rate, p50: res.P50, p99: res.P99, lag: res.LagP50, errors: res.Errors,
		rate:        float64(res.Requests) / secs,
		proxyCPU:    100 * pc1.Sub(pc0).Total().Seconds() / secs,
		upstreamCPU: 100 * uc1.Sub(uc0).Total().Seconds() / secs,
		loadgenCPU:  100 * res.CPU.Seconds() / secs,
	}
	if rate > 0 {
		p.mode = paced
	}
	busy, _, _ := procstat.BusyPct(cs0, cs1)
	p.otherCPU = max(0, busy*float64(runtime.NumCPU())-p.proxyCPU-p.upstreamCPU-p.loadgenCPU)
	if proxied(path) && res.Requests > 0 {
		p.proxyPerReq = pc1.Sub(pc0).Total() / time.Duration(res.Requests)
	}
	fmt.Fprintf(os.Stderr, "%-15s %-6s conns=%-3d %8.0f req/s p50 %v p99 %v lag %v proxy %.0f%% upstream %.0f%% loadgen %.0f%% others %.0f%%\n",
		path, p.mode, conns, p.rate, p.p50, p.p99, p.lag, p.proxyCPU, p.upstreamCPU, p.loadgenCPU, p.otherCPU)
	return p, nil
}

func proxied(path string) bool { return path == pathL7 || path == pathProxy }

// median picks, per (path, conns, mode), the repetition with the median
// rate (closed loop) or p50 (paced, where the rate is the one asked for).
func median(points []point) []point {
	type key struct {
		path  string
		conns int
		mode  string
	}
	groups := map[key][]point{}
	var order []key
	for _, p := range points {
		k := key{p.path, p.conns, p.mode}
		if groups[k] == nil {
			order = append(order, k)
		}
		groups[k] = append(groups[k], p)
	}
	var out []point
	for _, k := range order {
		g := groups[k]
		if k.mode == paced {
			slices.SortFunc(g, func(a, b point) int { return cmp.Compare(a.p50, b.p50) })
		} else {
			slices.SortFunc(g, func(a, b point) int { return cmp.Compare(a.rate, b.rate) })
		}
		out = append(out, g[len(g)/2])
	}
	return out
}

// repetitions measures every point of s reps times, the paths of one
// (connections) interleaved and their order swapped every repetition, so
// that drift in the machine's load hits both alike. With pace, each
// connection count above 1 also gets an open-loop point per path at half
// the proxied path's closed-loop rate of the same repetition.
func repetitions(ctx context.Context, cfg config, s *setup, plain, proxy string, pace bool) ([]point, error) {
	var points []point
	for rep := range cfg.reps {
		order := []string{plain, proxy}
		if rep%2 == 1 {
			order = []string{proxy, plain}
		}
		for _, n := range cfg.conns {
			var proxyRate float64
			for _, path := range order {
				p, err := measure(ctx, cfg, s, path, n, 0)
				if err != nil {
					return nil, err
				}
				if path == proxy {
					proxyRate = p.rate
				}
				points = append(points, p)
			}
			if !pace || n == 1 || proxyRate == 0 {
				continue
			}
			for _, path := range order {
				p, err := measure(ctx, cfg, s, path, n, pacedShare*proxyRate)
				if err != nil {
					return nil, err
				}
				points = append(points, p)
			}
		}
	}
	return points, nil
}

// pacedShare of the proxied path's closed-loop rate is the load offered to
// both paths for the latency at many connections. Not more: a paced
// connection costs the load generator a thread wake-up per send, about
// three times its closed-loop cost per request, and at half the L7 rate
// (about 24k req/s on a quiet machine) the L4 path's CPU, shared by load
// generator and upstream, saturated and both paths measured a queue
// again (tens of ms of send lag). overloaded flags a point where that
// happened anyway.
const pacedShare = 0.25

// overloaded: the paced sends fell behind their schedule, so the latency
// is queueing again.
func (p point) overloaded() bool {
	return p.mode == paced && (p.rate < 0.95*p.offered || p.lag > time.Millisecond)
}

// realPath measures L4 vs L7 through the node's datapath.
func realPath(ctx context.Context, cfg config) ([]point, error) {
	t, err := newTopo()
	if err != nil {
		return nil, fmt.Errorf("topology: %w", err)
	}
	defer t.close()
	up, err := startChild(ctx, t.srvT, nil, "upstream", otherCPU, t.target(pathL4), t.target(pathL7))
	if err != nil {
		return nil, err
	}
	defer up.stop()
	proxy, err := startChild(ctx, t.node, profileEnvOf(cfg.cpuProfile), "proxy", proxyCPU, "transparent")
	if err != nil {
		return nil, err
	}
	defer proxy.stop()
	if err := t.checkPaths(ctx); err != nil {
		return nil, err
	}
	s := &setup{up: up, proxy: proxy, gen: t.cliT, target: map[string]string{pathL4: t.target(pathL4), pathL7: t.target(pathL7)}}
	return repetitions(ctx, cfg, s, pathL4, pathL7, true)
}

// loopback measures the proxy with nothing around it: its capacity on one
// core.
func loopback(ctx context.Context, cfg config, up *child) ([]point, error) {
	proxy, err := startChild(ctx, nil, nil, "proxy", proxyCPU, up.addr)
	if err != nil {
		return nil, err
	}
	defer proxy.stop()
	s := &setup{up: up, proxy: proxy, target: map[string]string{pathDirect: up.addr, pathProxy: proxy.addr}}
	return repetitions(ctx, cfg, s, pathDirect, pathProxy, false)
}

// idleRSS opens n keep-alive connections through a fresh proxy, sends one
// request on each, leaves them idle and reads the proxy's RSS.
func idleRSS(ctx context.Context, up *child, n int) (before, after, hwm uint64, err error) {
	proxy, err := startChild(ctx, nil, nil, "proxy", proxyCPU, up.addr)
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
	points, err := realPath(ctx, cfg)
	if err != nil {
		return err
	}
	up, err := startChild(ctx, nil, nil, "upstream", otherCPU)
	if err != nil {
		return err
	}
	defer up.stop()
	if cfg.loopback {
		lp, err := loopback(ctx, cfg, up)
		if err != nil {
			return fmt.Errorf("loopback: %w", err)
		}
		points = append(points, lp...)
	}
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

func (r *report) find(path string, conns int, mode string) (point, bool) {
	for _, p := range r.points {
		if p.path == path && p.conns == conns && p.mode == mode {
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
	fmt.Fprintf(w, "| setup | a client and a server pod (fp- network namespaces) on one node namespace; the node's datapath loaded and attached to both pod veths as the agent does (tc_lb, then tc_policy with the L7 redirect); the server's ingress enforced: port %d allowed from the client at L4 (path L4), port %d allowed with HTTP rules, so tc_policy hands the flow to the agent's L7 proxy (bpf_sk_assign) in the node's namespace, which dials the original destination (path L7) |\n", l4Port, l7Port)
	fmt.Fprintf(w, "| CPUs | proxy pinned to CPU %s with GOMAXPROCS=1; upstream (minimal keep-alive HTTP/1.1 server, GOMAXPROCS=1) and load generator (keep-alive; closed loop: goroutines on GOMAXPROCS=1; paced: a thread per connection) share CPU %s |\n", proxyCPU, otherCPU)
	fmt.Fprintf(w, "| request | `GET /api/v1/items?page=2` with 4 header fields, judged against 2 allow rules and 1 deny rule (regexes on method, path, host and a header), 12-byte response |\n")
	fmt.Fprintf(w, "| settings | %s per point, %d repetition(s), paths interleaved (order swapped every repetition), median reported; paced load at %.0f %% of the L7 path's closed-loop rate; %d idle connections for RSS |\n\n", r.cfg.duration, r.cfg.reps, 100*pacedShare, r.cfg.idle)

	fmt.Fprintf(w, "## Budget\n\nReported, not asserted: a benchmark never fails on a number. L7 vs L4: the same pods, node and datapath; only the policy entry differs.\n\n| target | measured | status |\n|---|---|---|\n")
	for _, n := range r.cfg.conns {
		mode, how := closedLoop, "closed loop"
		if n > 1 {
			mode, how = paced, "paced, same offered load on both paths"
		}
		l4, ok1 := r.find(pathL4, n, mode)
		l7, ok2 := r.find(pathL7, n, mode)
		if ok1 && ok2 {
			added := l7.p50 - l4.p50
			st := status(added < 150*time.Microsecond)
			if l4.overloaded() || l7.overloaded() {
				st = "not measured: the paced load was not kept (see send lag)"
			}
			fmt.Fprintf(w, "| %d connection(s): proxy adds < 150 µs at p50 (%s) | %s (%s vs %s) | %s |\n", n, how, us(added), us(l7.p50), us(l4.p50), st)
		}
		l4, ok1 = r.find(pathL4, n, closedLoop)
		l7, ok2 = r.find(pathL7, n, closedLoop)
		if ok1 && ok2 && l4.rate > 0 {
			ratio := 100 * l7.rate / l4.rate
			fmt.Fprintf(w, "| %d connection(s): L7 req/s ≥ 50 %% of L4, proxy on one core (closed loop) | %.0f %% (%.0f vs %.0f req/s) | %s |\n", n, ratio, l7.rate, l4.rate, status(ratio >= 50))
		}
	}
	for _, n := range r.cfg.conns {
		l4, ok1 := r.find(pathL4, n, closedLoop)
		l7, ok2 := r.find(pathL7, n, closedLoop)
		if ok1 && ok2 && l7.proxyPerReq > 0 && l4.rate > 0 {
			capacity := float64(time.Second) / float64(l7.proxyPerReq)
			fmt.Fprintf(w, "| %d connection(s), for reading the above: proxy capacity on one core (1 s / proxy CPU per request) vs L4 req/s | %.0f vs %.0f req/s (%.0f %%) | – |\n", n, capacity, l4.rate, 100*capacity/l4.rate)
		}
	}
	fmt.Fprintf(w, "| proxy RSS < 64 MiB with %d idle keep-alive connections | %.1f MiB (%.1f MiB before them, peak %.1f MiB; the connections add %.1f MiB) | %s |\n\n",
		r.cfg.idle, mib(r.rssIdle), mib(r.rssBefore), mib(r.rssPeak), mib(r.rssIdle)-mib(r.rssBefore), status(r.rssIdle < 64<<20))

	fmt.Fprintf(w, "## Through the datapath, closed loop\n\nEach connection sends its next request when the previous response is complete: this gives the rate. CPU columns are %% of one core during the point; \"proxy CPU / request\" is the proxy's CPU time divided by the requests it served, the cost that bounds its rate on one core. With more than one connection both paths saturate their CPUs, so p50 is about connections / rate (Little's law): that latency is queueing and only restates the rate; the budget's latency at many connections comes from the paced table.\n\n")
	r.table(w, closedLoop, pathL4, pathL7)
	fmt.Fprintf(w, "\n## Through the datapath, paced\n\nThe same offered load on both paths, %.0f %% of the L7 path's closed-loop rate in the same repetition (not more: a paced send costs the load generator a thread wake-up, and at 50 %% the L4 path's shared CPU saturated), so neither path is saturated and the difference of the latencies is what the proxy adds to a request, not a queue. Each connection sends on a fixed schedule and latency counts from the scheduled send time, as wrk2 does: a slow response that delays the next sends is counted in theirs (no coordinated omission). \"send lag\" is how late sends left (the connection was still busy, or the load generator's timer fired late); it is part of both paths' latency.\n\n", 100*pacedShare)
	r.table(w, paced, pathL4, pathL7)
	if r.cfg.loopback {
		fmt.Fprintf(w, "\n## Loopback, for reading the above\n\nThe proxy with nothing around it: load generator and upstream on loopback (CPU %s), the proxy alone on CPU %s, no datapath, no veth. Direct never wakes a second CPU; this is not the L4 path of the budget, but the proxy's CPU per request here is its own cost on one core.\n\n", otherCPU, proxyCPU)
		r.table(w, closedLoop, pathDirect, pathProxy)
	}
	fmt.Fprintf(w, "\n## Reading it\n\n")
	fmt.Fprintf(w, "- On the L4 path the load generator, the upstream and the datapath's softirq work all run on CPU %s; on the L7 path the proxy adds CPU %s and four wake-ups per request on it (request in, request out to the upstream, response in, response out). At one connection those wake-ups are most of the added latency and the reason for the rate gap: the proxy CPU per request is much higher at 1 connection than at many, where each wake-up serves several requests.\n", otherCPU, proxyCPU)
	if l4, ok := r.find(pathL4, 1, closedLoop); ok {
		fmt.Fprintf(w, "- At one connection in a closed loop the rate is one over the round trip, so \"≥ 50 %% of the L4 rate\" allows the proxy to add one L4 round trip per request (p50 %s here), far less than the 150 µs the latency target grants: a proxy that adds 100 µs meets the one and gets about %.0f %% of the rate. At one connection the rate cell restates the latency cell; the proxy's capacity on one core is read at 64 connections.\n",
			us(l4.p50), 100*float64(l4.p50)/float64(l4.p50+100*time.Microsecond))
	}
	fmt.Fprintf(w, "- Paced, each connection sends rarely, so like one connection every request pays the proxy's wake-ups (its CPU per request is close to the one-connection figure); the paced cell is the proxy's added latency for a request under light load, not under saturation.\n")
	fmt.Fprintf(w, "- RSS: the proxy process is this harness's binary, which links the datapath and Kubernetes API types for the topology; their start-up is in \"before them\" (in the agent they are there anyway). What the idle connections cost is the difference.\n")
	fmt.Fprintf(w, "- The machine is shared (see the load average and \"other processes' CPU\", in %% of one core of %d): when others keep the CPUs busy, every process here waits for a CPU at each wake-up, and the L7 path has more of them, on a second CPU. Latency and rate then measure the machine's queue more than the proxy; \"proxy CPU / request\" is the least disturbed figure.\n", runtime.NumCPU())
	return nil
}

// table writes the points of mode on the given paths.
func (r *report) table(w io.Writer, mode string, paths ...string) {
	fmt.Fprintf(w, "| connections | path | req/s | p50 | p99 | errors | offered req/s | send lag p50 | proxy CPU | upstream CPU | load generator CPU | other processes' CPU | proxy CPU / request |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, n := range r.cfg.conns {
		for _, path := range paths {
			p, ok := r.find(path, n, mode)
			if !ok {
				continue
			}
			perReq, offered, lag := "–", "–", "–"
			if proxied(p.path) {
				perReq = fmt.Sprintf("%.1f µs", float64(p.proxyPerReq)/1e3)
			}
			if p.mode == paced {
				offered, lag = fmt.Sprintf("%.0f", p.offered), us(p.lag)
				if p.overloaded() {
					lag += " (**overloaded**: sends fell behind, latency is queueing)"
				}
			}
			fmt.Fprintf(w, "| %d | %s | %.0f | %s | %s | %d | %s | %s | %.0f %% | %.0f %% | %.0f %% | %.0f %% | %s |\n",
				p.conns, p.path, p.rate, us(p.p50), us(p.p99), p.errors, offered, lag, p.proxyCPU, p.upstreamCPU, p.loadgenCPU, p.otherCPU, perReq)
		}
	}
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }
