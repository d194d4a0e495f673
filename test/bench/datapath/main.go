// Command datapath measures fastpath's datapath against its performance
// budget and writes the results to docs/benchmarks (datapath.md,
// datapath-traffic.csv with one row per traffic round, datapath.csv with
// the agent and map-update numbers).
//
//	make bench-datapath       # go run ./test/bench/datapath -out docs/benchmarks
//	go run ./test/bench/datapath -quick -out /tmp/bench
//
// It measures, in one run and for each number of services N:
//
//   - new connections per second (connect, 16-byte request, 64-byte reply,
//     close) and request latency on kept-alive connections, with 1 and 2
//     load-generator workers, for four client paths: "tc" (client namespace
//     -> VIP through the per-packet load balancer on the node), "sock" (a
//     process in a cgroup with the socket load balancer, in the node
//     namespace -> VIP), and the direct paths without a service, "direct"
//     (client namespace -> backend) and "direct-node" (the socket-LB client,
//     same cgroup and namespace -> backend). Every connection picks one of
//     the N services at random.
//   - the time the reconciler takes to apply one changed service with 50,000
//     services in the real kernel maps, and a raw map update for comparison;
//   - the agent's memory and start-up time, and the maps' memory.
//
// It asserts nothing: it measures and reports, next to the budget targets.
// Everything it creates lives in fp- network namespaces, a cgroup v2 subtree
// and a bpffs directory named fp-bench-*, and is removed at the end, also on
// failure and on Ctrl-C.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fastpath-net/fastpath/internal/ctl"
	"github.com/fastpath-net/fastpath/internal/datapath"
	"github.com/fastpath-net/fastpath/internal/servicefile"
	"github.com/fastpath-net/fastpath/test/bench/internal/benchmain"
	"github.com/fastpath-net/fastpath/test/bench/internal/loadgen"
	"github.com/fastpath-net/fastpath/test/bench/internal/netstat"
	"github.com/fastpath-net/fastpath/test/bench/internal/procstat"
	"github.com/fastpath-net/fastpath/test/bench/internal/rounds"
	"github.com/fastpath-net/fastpath/test/internal/testbin"
)

type config struct {
	Out         string        // directory for datapath.md, datapath.csv and datapath-traffic.csv
	Ns          []int         // numbers of services
	Workers     []int         // load-generator worker counts
	Duration    time.Duration // measured time of a new-connection point: two legs of half of it (connSchedule)
	LatDuration time.Duration // measured window of a latency point
	Warmup      time.Duration // load before each window, not counted
	Reps        int           // repetitions of every point; the median is reported
	PairedReps  int           // repetitions of the side-by-side phase (paired.go)
	PairedHot   bool          // the side-by-side phase keeps the largest N in the maps (paired.go)
	Pool        int           // kept-alive connections per worker
	UpdateN     int           // services in the maps for the update benchmark; 0: the largest N
	UpdateOps   int           // changes timed per kind
	ProgRuns    int           // BPF_PROG_TEST_RUN calls per N and packet kind (progcost.go)
	AgentBin    string        // prebuilt fastpath-agent; "": build one
	CTMax       int           // the agents' --ct-max; 0: the agent's default, sized from the node's memory
	AgentArgs   []string      // more flags for every agent, to study one setting
	// SwapWait is the pause before the side-by-side phase's second half
	// (paired.go): the backends' TIME_WAIT; 0 in tests.
	SwapWait time.Duration
	Command  string        // how the run was started, for the report
	ID       string        // names everything the run creates fp-bench-<ID>; "": random
	WaitIdle time.Duration // wait at most this long for a quiet machine before measuring; 0: do not check
	Log      io.Writer     // progress
}

func defaultConfig() config {
	return config{
		Out:     "docs/benchmarks",
		Ns:      []int{1, 1000, 10000, 50000},
		Workers: []int{1, 2},
		// Three seconds per mode and repetition (two 1.5 s legs): with 1 s,
		// the pooled legs of one repetition swung 81-106 % of their
		// baseline on this 2-core VM, where a vCPU woken from idle costs
		// tens of microseconds at random; the median of six hardly settled.
		Duration:    3 * time.Second,
		LatDuration: 500 * time.Millisecond,
		Warmup:      200 * time.Millisecond,
		Reps:        6,
		// The side-by-side ratio of one repetition scatters with a standard
		// deviation near 5 % (the legs of one mode 1.5 s apart differ by
		// 5-16 % on this VM): the median of six is good to about 2.5 %,
		// of twelve to about 1.8 %, for 3.5 min more.
		PairedReps: 12,
		Pool:       32,
		UpdateOps:  1000,
		ProgRuns:   20000,
		// The run opens up to 15,000 connections a second for minutes;
		// fp_ct sized for that, as docs/install.md tells operators to
		// (about 130 entries per connection a second), not the agent's
		// default from this 23 GB machine's memory (2^18), which is full
		// and evicting. The side by side's 50,000-service node, whose
		// client reaches every VIP with tuples of its own, fills it faster
		// than the 1-service node, whose client reuses its tuples (one run
		// each, tc / sock: 93.7 / 94.4 % at 2^18, 95.4 / 95.1 % at 2^21).
		CTMax:    1 << 21,
		WaitIdle: time.Minute,
		SwapWait: timeWait,
		Log:      os.Stderr,
	}
}

func main() {
	if loadgen.IsChild() {
		os.Exit(loadgen.Main())
	}
	benchmain.Main("bench-datapath", parseFlags, run)
}

func parseFlags(args []string) (config, error) {
	cfg := defaultConfig()
	fs := flag.NewFlagSet("bench-datapath", flag.ContinueOnError)
	fs.StringVar(&cfg.Out, "out", cfg.Out, "directory for datapath.md, datapath.csv and datapath-traffic.csv")
	ns := fs.String("n", "1,1000,10000,50000", "numbers of services, comma-separated")
	workers := fs.String("workers", "1,2", "load-generator worker counts, comma-separated")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "measured time of each new-connection point per repetition, run as two halves in an ABBA block with the baseline")
	fs.DurationVar(&cfg.LatDuration, "latency-duration", cfg.LatDuration, "measured window of each kept-alive latency point")
	fs.DurationVar(&cfg.Warmup, "warmup", cfg.Warmup, "load before each window, not counted")
	fs.IntVar(&cfg.Reps, "reps", cfg.Reps, "repetitions of every point (the median is reported; even: ABBA and BAAB blocks alike)")
	fs.IntVar(&cfg.PairedReps, "paired-reps", cfg.PairedReps, "repetitions of the side-by-side phase of N=1 and the largest N (even: mirrored orders alike)")
	fs.BoolVar(&cfg.PairedHot, "paired-hot", false, "diagnostic: the side-by-side phase keeps the largest N in the maps throughout, and its small-N legs send to one service per backend among them, so only how widely the lookups spread differs")
	fs.IntVar(&cfg.Pool, "pool", cfg.Pool, "kept-alive connections per worker")
	fs.IntVar(&cfg.UpdateN, "update-n", 0, "services in the maps while timing updates (0: the largest -n)")
	fs.IntVar(&cfg.UpdateOps, "update-ops", cfg.UpdateOps, "changes timed per kind of update")
	fs.IntVar(&cfg.ProgRuns, "prog-runs", cfg.ProgRuns, "fp_tc_lb runs (BPF_PROG_TEST_RUN) per N and packet kind")
	fs.DurationVar(&cfg.WaitIdle, "wait-idle", cfg.WaitIdle, "wait at most this long for other processes to leave the CPUs before measuring (0: do not check)")
	fs.StringVar(&cfg.AgentBin, "agent", "", "prebuilt fastpath-agent binary (default: go build one into a temp dir)")
	fs.IntVar(&cfg.CTMax, "ct-max", cfg.CTMax, "the agents' --ct-max (0: the agent's default, from the node's memory)")
	agentArgs := fs.String("agent-args", "", "more flags for every agent, space-separated (e.g. \"--ct-gc-interval 1h\"), to study one setting")
	quick := fs.Bool("quick", false, "short run: 0.5s windows, one repetition, 200 updates (flags given explicitly win)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *quick {
		err := benchmain.Preset(fs, map[string]string{
			"duration": "500ms", "latency-duration": "300ms", "warmup": "100ms", "reps": "1", "paired-reps": "1", "update-ops": "200", "prog-runs": "2000",
		})
		if err != nil {
			return cfg, err
		}
	}
	var err error
	if cfg.Ns, err = benchmain.IntList(*ns, 1, 200000); err != nil {
		return cfg, fmt.Errorf("-n: %w", err)
	}
	if cfg.Workers, err = benchmain.IntList(*workers, 1, 64); err != nil {
		return cfg, fmt.Errorf("-workers: %w", err)
	}
	cfg.AgentArgs = strings.Fields(*agentArgs)
	cfg.Command = "go run ./test/bench/datapath " + strings.Join(args, " ")
	return cfg, cfg.validate()
}

func (c *config) validate() error {
	switch {
	case len(c.Ns) == 0 || len(c.Workers) == 0:
		return errors.New("need at least one -n and one -workers value")
	case c.Duration <= 0 || c.LatDuration <= 0 || c.Warmup < 0:
		return errors.New("durations must be positive")
	case c.Duration > 10*time.Minute || c.LatDuration > 10*time.Minute:
		return errors.New("durations above 10 minutes are surely a mistake")
	case c.Reps < 1 || c.Reps > 100:
		return errors.New("-reps: 1..100")
	case c.PairedReps < 1 || c.PairedReps > 100:
		return errors.New("-paired-reps: 1..100")
	case c.Pool < 1 || c.Pool > 1024:
		return errors.New("-pool: 1..1024")
	case c.UpdateOps < 1 || c.UpdateOps > 1000000:
		return errors.New("-update-ops: 1..1000000")
	case c.ProgRuns < 1 || c.ProgRuns > 100000:
		// Two ct entries per new flow: the default ct map holds 262,144.
		return errors.New("-prog-runs: 1..100000")
	case c.CTMax < 0:
		return errors.New("-ct-max: 0 or a number of entries")
	case c.Out == "":
		return errors.New("-out is required")
	}
	return nil
}

// agentArgs are the flags every agent gets besides the harness's own.
func (c *config) agentArgs() []string {
	var out []string
	if c.CTMax > 0 {
		out = append(out, "--ct-max", strconv.Itoa(c.CTMax))
	}
	return append(out, c.AgentArgs...)
}

// modeSpec is one client path.
type modeSpec struct {
	Name   string
	Where  string // the client's namespace: "client", "direct" or "node"
	Cgroup bool   // client process in the benchmark's cgroup (socket LB)
	VIP    bool   // connects to the service VIP (else to its backend)
	Base   string // the direct mode it is compared with
	Desc   string
}

var modes = []modeSpec{
	{Name: "direct", Where: "direct", Desc: "a client netns like the tc client's (own veth to the node, TC program on it) -> backend IP:port, no service; baseline of tc"},
	{Name: "tc", Where: "client", VIP: true, Base: "direct", Desc: "client netns -> VIP:80, per-packet LB at TC ingress of the node"},
	{Name: "direct-node", Where: "node", Cgroup: true, Desc: "node netns, process in the socket-LB cgroup -> backend IP:port, no service; baseline of sock"},
	{Name: "sock", Where: "node", Cgroup: true, VIP: true, Base: "direct-node", Desc: "node netns, process in the socket-LB cgroup -> VIP:80, socket LB at connect()"},
}

// point is one measurement: one load-generator run.
type point struct {
	N       int
	Mode    string
	Kind    string
	Workers int
	Rep     int
	// Leg is 1 or 2 for a new-connection run, the mode's first or second
	// run in its repetition's ABBA block (connSchedule); 0 for requests.
	Leg      int
	Window   time.Duration // measured
	Rate     float64       // ops/s
	P50, P99 float64       // µs
	Ops      uint64
	Errors   uint64
	ErrKinds map[string]uint64
	Stuck    int
	// CPU in % of one core over the window (client) or the child's whole
	// life (server = the server child process, agent).
	ClientUser, ClientSys  float64 // seconds
	ClientCPU              float64
	ServerCPU              float64
	AgentCPU               float64
	ForwardNew             uint64 // flows the TC load balancer DNATed during the run
	ForwardCT, ReplyRevNat uint64 // their later packets, each way (progcost.go weighs by them)
	SockConnect            uint64 // connects the socket load balancer translated
	Drops                  uint64 // drop_* during the run
	// Machine-wide, in % of all CPUs, over the child's whole life.
	MachineBusy, Softirq, Steal float64
	// Kernel TCP counters over the run (netstat.Reported), all namespaces.
	SynRetrans, PAWSTimewait, TWRecycled uint64
	// OtherCPU is machine busy time not used by client, servers or agent,
	// in % of one core: other processes, or kernel work outside them.
	OtherCPU float64
	Err      string // the run failed; no numbers
}

// nResult is what one N costs the agent.
type nResult struct {
	N          int
	FileBytes  int64
	Parse      time.Duration // servicefile.Parse of the file, in this process
	ParseAlloc uint64        // bytes allocated by that parse
	Ready      time.Duration // agent exec -> "datapath programmed"
	Took       time.Duration // the agent's own "took" for that first sync
	RSS, HWM   uint64        // agent VmRSS, VmHWM once programmed
	RSSAfter   uint64        // agent VmRSS after the traffic
	MapMem     uint64        // kernel memlock accounting over all maps, once programmed
	MapMemEnd  uint64        // the same after the traffic (ct filled)
	Maps       []ctl.MapStatus
	Counters   map[string]uint64 // datapath counters over all traffic of this N
	// InTraffic is fp_tc_lb's run time in traffic (progtraffic.go), per
	// worker count; InTrafficErr says why it is missing.
	InTraffic    []inTraffic
	InTrafficErr string
	CTEntries    int // fp_ct entries after the repetitions
	// AgentWarnings are the agent's WARN and ERROR log lines (at most 10).
	AgentWarnings []string
}

type results struct {
	Cfg        config
	Start, End time.Time
	LoadStart  string // /proc/loadavg when the run started
	LoadEnd    string
	// The machine's busy share (all CPUs) in the last sample before the
	// measurements, and how long the run waited for it; -1: not checked.
	QuietBusy float64
	Waited    time.Duration
	Machine   machine
	Points    []point
	PerN      []nResult
	Update    *updateResult
	UpdatePin string
	ProgCost  []progCost
	// PairedErr says why the side-by-side phase (paired.go) is missing.
	PairedErr string
	// PairedWarnings are that phase's agents', as nResult.AgentWarnings.
	PairedWarnings []string
}

// run measures everything and writes the report. Everything it creates is
// removed before it returns.
func run(ctx context.Context, cfg config) (err error) {
	if err := cfg.validate(); err != nil {
		return err
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	if os.Geteuid() != 0 {
		return errors.New("needs root (BPF, network namespaces, cgroups)")
	}
	res := &results{Cfg: cfg, Start: time.Now(), Machine: procstat.DescribeMachine(), LoadStart: procstat.LoadAvg()}
	logf(cfg, "fastpath datapath benchmark: N=%v workers=%v window %s (latency %s) warm-up %s, %d rep(s); about %s",
		cfg.Ns, cfg.Workers, cfg.Duration, cfg.LatDuration, cfg.Warmup, cfg.Reps, estimate(cfg).Round(time.Second))

	env, err := newEnv(cfg.Log, cfg.ID)
	if err != nil {
		return err
	}
	env.agentArgs = cfg.agentArgs()
	defer func() {
		if cerr := env.close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("cleanup: %w", cerr))
		}
	}()
	bin := cfg.AgentBin
	if bin == "" {
		t := time.Now()
		if bin, err = testbin.Build(ctx, env.tmp); err != nil {
			return err
		}
		logf(cfg, "built fastpath-agent in %s", time.Since(t).Round(time.Millisecond))
	}
	if res.QuietBusy, res.Waited, err = waitQuiet(ctx, cfg); err != nil {
		return err
	}
	for i, n := range cfg.Ns {
		if i > 0 {
			// Each N starts a fresh agent with fresh maps, which knows
			// nothing of the previous N's closed flows while the backends
			// still hold them in TIME_WAIT: wait that out, or the first
			// seconds of this N measure the previous one's leftovers.
			logf(cfg, "waiting %s for the backends' TIME_WAIT to expire", timeWait)
			if err := pause(ctx, timeWait); err != nil {
				return err
			}
		}
		nr, pts, err := benchN(ctx, cfg, env, bin, n)
		if err != nil {
			return fmt.Errorf("at %d services: %w", n, err)
		}
		res.PerN = append(res.PerN, *nr)
		res.Points = append(res.Points, pts...)
	}
	if lo, hi, ok := pairedNs(cfg.Ns); ok {
		logf(cfg, "waiting %s for the backends' TIME_WAIT to expire, then N=%d and N=%d side by side", timeWait, lo, hi)
		if err := pause(ctx, timeWait); err != nil {
			return err
		}
		pts, warns, err := benchPaired(ctx, cfg, env, bin)
		res.PairedWarnings = warns
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			res.PairedErr = err.Error()
			logf(cfg, "N=%d and N=%d side by side not measured: %v", lo, hi, err)
		}
		res.Points = append(res.Points, pts...)
	}

	updN := cfg.UpdateN
	if updN == 0 {
		updN = slices.Max(cfg.Ns)
	}
	logf(cfg, "map updates: %d services, %d changes of each kind", updN, cfg.UpdateOps)
	pin := filepath.Join(env.pinRoot, "update")
	res.Update, err = benchUpdates(ctx, pin, updN, cfg.UpdateOps, env.backends)
	if uerr := env.detach(pin); uerr != nil {
		err = errors.Join(err, uerr)
	}
	if err != nil {
		return fmt.Errorf("update latency: %w", err)
	}
	for _, o := range res.Update.Ops {
		logf(cfg, "  %-18s median %6.1fµs p99 %6.1fµs", o.Name, us(o.quantile(0.5)), us(o.quantile(0.99)))
	}
	logf(cfg, "fp_tc_lb per packet: N=%v, %d runs per kind", cfg.Ns, cfg.ProgRuns)
	pin = filepath.Join(env.pinRoot, "progcost")
	res.ProgCost, err = benchProgCost(ctx, pin, cfg.Ns, cfg.ProgRuns, env.backends)
	if uerr := datapath.Uninstall(pin); uerr != nil {
		err = errors.Join(err, uerr)
	}
	if err != nil {
		return fmt.Errorf("per-packet cost: %w", err)
	}
	for _, pc := range res.ProgCost {
		var cells []string
		for _, k := range pc.Kinds {
			cells = append(cells, fmt.Sprintf("%s %.0fns", k.Name, nanos(k.quantile(0.5))))
		}
		logf(cfg, "  N=%-6d %s", pc.N, strings.Join(cells, ", "))
	}
	res.End, res.LoadEnd = time.Now(), procstat.LoadAvg()
	if err := writeReport(cfg.Out, res); err != nil {
		return err
	}
	logf(cfg, "wrote %s, %s and %s (%s)", filepath.Join(cfg.Out, "datapath.md"), filepath.Join(cfg.Out, "datapath-traffic.csv"), filepath.Join(cfg.Out, "datapath.csv"),
		res.End.Sub(res.Start).Round(time.Second))
	return nil
}

// quietBusy is the busy share of all CPUs below which the machine counts as
// quiet: the benchmark shares it with nobody else.
const quietBusy = 20.0

// waitQuiet samples the machine's CPU use for 3 s at a time until it is
// quiet or cfg.WaitIdle has passed. It never fails the run for a busy
// machine: the report shows what the machine was doing.
func waitQuiet(ctx context.Context, cfg config) (busy float64, waited time.Duration, err error) {
	if cfg.WaitIdle <= 0 {
		return -1, 0, nil
	}
	start := time.Now()
	for {
		a, err := procstat.ReadCPUStat()
		if err != nil {
			return -1, 0, err
		}
		select {
		case <-ctx.Done():
			return -1, 0, ctx.Err()
		case <-time.After(3 * time.Second):
		}
		b, err := procstat.ReadCPUStat()
		if err != nil {
			return -1, 0, err
		}
		busy, _, _ = procstat.BusyPct(a, b)
		waited = time.Since(start)
		if busy <= quietBusy {
			logf(cfg, "machine quiet: %.0f %% of all CPUs busy", busy)
			return busy, waited, nil
		}
		if waited >= cfg.WaitIdle {
			logf(cfg, "machine still %.0f %% busy after waiting %s: measuring anyway (see \"other CPU\" in the report)", busy, waited.Round(time.Second))
			return busy, waited, nil
		}
		logf(cfg, "machine %.0f %% busy with other work; waiting for it to calm down (at most %s more)", busy, (cfg.WaitIdle - waited).Round(time.Second))
	}
}

// estimate is the expected wall time of the traffic part: per mode,
// repetition and worker count two new-connection legs and one request
// point, each with its warm-up and about 50 ms to start the generator,
// and the runs that time the program in traffic.
func estimate(cfg config) time.Duration {
	const start = 50 * time.Millisecond
	per := time.Duration(len(modes)*len(cfg.Workers)*cfg.Reps) * (cfg.Duration + cfg.LatDuration + 3*(cfg.Warmup+start))
	// The in-traffic program time: four runs per ABBA block (progtraffic.go).
	per += time.Duration(len(cfg.Workers)*min(cfg.Reps, progTrafficBlocks)*4) * (cfg.Duration/2 + start)
	total := time.Duration(len(cfg.Ns)) * (per + 5*time.Second)
	if _, _, ok := pairedNs(cfg.Ns); ok {
		// Eight legs per repetition and worker count; the TIME_WAIT before
		// the phase and before its second half, and two agents' starts
		// for each half.
		total += 2*timeWait + 4*10*time.Second + time.Duration(cfg.PairedReps*len(cfg.Workers))*8*(cfg.Duration/2+cfg.Warmup+start)
	}
	return total
}

// pause waits d, or until ctx ends.
func pause(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// timeWait is Linux's TCP TIME_WAIT (TCP_TIMEWAIT_LEN), plus a margin.
const timeWait = 62 * time.Second

// benchN programs n services with a fresh agent and measures every mode.
func benchN(ctx context.Context, cfg config, env *benchEnv, bin string, n int) (nr *nResult, pts []point, err error) {
	nr = &nResult{N: n}
	file := filepath.Join(env.tmp, fmt.Sprintf("services-%d.yaml", n))
	if nr.FileBytes, err = writeServices(file, n, env.backends); err != nil {
		return nil, nil, err
	}
	if err := timeParse(file, n, nr); err != nil {
		return nil, nil, err
	}

	// No program of an earlier agent may still be attached.
	if left, err := env.attachedTCX(); err != nil || left != 0 {
		return nil, nil, fmt.Errorf("node interfaces still carry %d TC programs before the agent starts (%v)", left, err)
	}
	pin := filepath.Join(env.pinRoot, fmt.Sprintf("n%d", n))
	agent, err := env.startAgent(bin, pin, file)
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		err = errors.Join(err, agent.stop(), env.detach(pin))
	}()
	limit := 60*time.Second + time.Duration(n)*2*time.Millisecond
	if nr.Ready, nr.Took, err = agent.waitProgrammed(ctx, n, len(backendsOf(env.backends, n, 0)), limit); err != nil {
		return nil, nil, err
	}
	if nr.RSS, nr.HWM, err = procstat.Mem(agent.pid()); err != nil {
		return nil, nil, err
	}
	st, err := mapStatus(pin)
	if err != nil {
		return nil, nil, err
	}
	nr.MapMem = st.MapMemoryBytes
	logf(cfg, "N=%d: file %s parsed in %s; agent programmed in %s (sync %s), RSS %s (peak %s), maps %s",
		n, mib(uint64(nr.FileBytes)), nr.Parse.Round(time.Millisecond), nr.Ready.Round(time.Millisecond),
		nr.Took.Round(time.Millisecond), mib(nr.RSS), mib(nr.HWM), mib(nr.MapMem))

	ctr, err := openCounters(pin)
	if err != nil {
		return nil, nil, err
	}
	defer ctr.close()
	startCounters, err := ctr.read()
	if err != nil {
		return nil, nil, err
	}
	targets := map[bool][]string{true: vipTargets(n), false: directTargets(n, env.backends)}

	// Every mode must carry traffic before anything is measured.
	for _, m := range modes {
		p, err := runPoint(ctx, cfg, env, agent, ctr, n, m, loadgen.KindConn, 1, 0, targets[m.VIP], 100*time.Millisecond, 0)
		if err != nil {
			return nil, nil, fmt.Errorf("probe of mode %s: %w", m.Name, err)
		}
		if p.Err != "" {
			return nil, nil, fmt.Errorf("probe of mode %s: %s", m.Name, p.Err)
		}
		if p.Ops == 0 || p.Errors > 0 {
			return nil, nil, fmt.Errorf("probe of mode %s: %d connections, %d errors %v", m.Name, p.Ops, p.Errors, p.ErrKinds)
		}
		// Each mode must take the path it claims: tc through the TC load
		// balancer, sock through the socket one (and then no per-packet
		// NAT), the direct modes through neither.
		var ok bool
		switch {
		case m.VIP && m.Cgroup:
			ok = p.SockConnect >= p.Ops && p.ForwardNew == 0
		case m.VIP:
			ok = p.ForwardNew >= p.Ops && p.SockConnect == 0
		default:
			ok = p.ForwardNew == 0 && p.SockConnect == 0
		}
		if !ok {
			return nil, nil, fmt.Errorf("probe of mode %s: %d connections, but the datapath counted %d TC-balanced flows and %d socket-balanced connects",
				m.Name, p.Ops, p.ForwardNew, p.SockConnect)
		}
	}

	// New connections: each load balancer and its direct baseline in an
	// ABBA block per repetition (legs, connSchedule); requests: the modes
	// interleaved and rotated between repetitions. Drift hits every mode
	// alike.
	for rep := 1; rep <= cfg.Reps; rep++ {
		for _, w := range cfg.Workers {
			for _, l := range connSchedule(rep) {
				p, err := measurePoint(ctx, cfg, env, agent, ctr, n, l.mode, loadgen.KindConn, w, rep, targets[l.mode.VIP], cfg.Duration/2)
				if err != nil {
					return nil, nil, err
				}
				p.Leg = l.leg
				pts = append(pts, *p)
			}
		}
		for _, w := range cfg.Workers {
			for j := range modes {
				m := modes[(j+rep-1)%len(modes)]
				p, err := measurePoint(ctx, cfg, env, agent, ctr, n, m, loadgen.KindLatency, w, rep, targets[m.VIP], cfg.LatDuration)
				if err != nil {
					return nil, nil, err
				}
				pts = append(pts, *p)
			}
		}
	}

	endCounters, err := ctr.read()
	if err != nil {
		return nil, nil, err
	}
	nr.Counters = netstat.Diff(endCounters, startCounters)
	if nr.RSSAfter, _, err = procstat.Mem(agent.pid()); err != nil {
		return nil, nil, err
	}
	if st, err = mapStatus(pin); err != nil {
		return nil, nil, err
	}
	nr.MapMemEnd, nr.Maps = st.MapMemoryBytes, st.Maps
	for _, m := range st.Maps {
		if m.Name == "fp_ct" {
			nr.CTEntries = m.Entries
		}
	}
	// After everything above is read, so these runs change none of it.
	if nr.InTraffic, err = measureProgTraffic(ctx, cfg, env, agent, ctr, n, targets); err != nil {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		nr.InTrafficErr = err.Error()
		logf(cfg, "N=%d: in-traffic program time not measured: %v", n, err)
	}
	nr.AgentWarnings = agent.warnings()
	return nr, pts, nil
}

// leg is one load-generator run of a repetition's ABBA block.
type leg struct {
	mode modeSpec
	leg  int // 1: the mode's first run in the block, 2: its second
}

// connSchedule is the order of the new-connection runs in repetition rep:
// for each mode with a baseline, an ABBA block (base, mode, mode, base) in
// odd repetitions and BAAB in even ones, the blocks' order reversed too.
// A repetition's rate pools a mode's two legs, whose mean time is the
// block's middle for both modes: a drift linear over the block (about
// 4 × (window/2 + warm-up)) cancels from their ratio, and over two
// repetitions each mode runs first, right after the other pair, as often
// as its baseline. With one run each in a rotated order, as before, the
// baseline ran right before its mode in 4 of 5 repetitions, up to two runs
// (3 s) apart in the fifth, and a lone 1 s window's noise (about ±10 %
// here on a shared machine) went straight into the ratio.
func connSchedule(rep int) []leg {
	var blocks [][]rounds.Run[modeSpec]
	for _, m := range modes {
		if m.Base != "" {
			blocks = append(blocks, rounds.ABBA(rep, modeByName(m.Base), m))
		}
	}
	if rep%2 == 0 {
		slices.Reverse(blocks)
	}
	var out []leg
	for _, b := range blocks {
		for _, r := range b {
			out = append(out, leg{mode: r.Item, leg: r.Leg})
		}
	}
	return out
}

func modeByName(name string) modeSpec {
	for _, m := range modes {
		if m.Name == name {
			return m
		}
	}
	panic("no mode " + name) // modes is a constant table
}

// measurePoint runs one point with the configured warm-up and logs it.
func measurePoint(ctx context.Context, cfg config, env *benchEnv, agent *agentProc, ctr *counterReader,
	n int, m modeSpec, kind string, w, rep int, targets []string, dur time.Duration) (*point, error) {
	p, err := runPoint(ctx, cfg, env, agent, ctr, n, m, kind, w, rep, targets, dur, cfg.Warmup)
	if err != nil {
		return nil, fmt.Errorf("%s %s workers=%d rep %d: %w", m.Name, kind, w, rep, err)
	}
	if p.Err != "" {
		logf(cfg, "N=%-6d %-11s %-7s w=%d rep %d: FAILED: %s", n, m.Name, kind, w, rep, p.Err)
		return p, nil
	}
	logf(cfg, "N=%-6d %-11s %-7s w=%d rep %d: %8.0f/s p50 %6.1fµs p99 %7.1fµs  client %3.0f%% (user %2.0f%%) server %3.0f%% agent %2.0f%% other %3.0f%% synretrans %d paws-tw %d%s",
		n, m.Name, kind, w, rep, p.Rate, p.P50, p.P99, p.ClientCPU,
		100*p.ClientUser/dur.Seconds(), p.ServerCPU, p.AgentCPU, p.OtherCPU, p.SynRetrans, p.PAWSTimewait, errNote(p))
	return p, nil
}

func errNote(p *point) string {
	if p.Errors == 0 && p.Stuck == 0 && p.Drops == 0 {
		return ""
	}
	return fmt.Sprintf("  ERRORS %d %v stuck %d drops %d", p.Errors, p.ErrKinds, p.Stuck, p.Drops)
}

// timeParse parses the services file in this process, as the agent will,
// and records time and allocation.
func timeParse(file string, n int, nr *nResult) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	t := time.Now()
	svcs, err := servicefile.Parse(data)
	nr.Parse = time.Since(t)
	runtime.ReadMemStats(&m1)
	nr.ParseAlloc = m1.TotalAlloc - m0.TotalAlloc
	if err != nil {
		return fmt.Errorf("generated services file does not parse: %w", err)
	}
	if len(svcs) != n {
		return fmt.Errorf("generated services file holds %d services, want %d", len(svcs), n)
	}
	svcs = nil
	runtime.GC()
	return nil
}

// runPoint runs the load generator once and gathers what the others used
// meanwhile.
func runPoint(ctx context.Context, cfg config, env *benchEnv, agent *agentProc, ctr *counterReader,
	n int, m modeSpec, kind string, workers, rep int, targets []string, dur, warmup time.Duration) (*point, error) {
	var ns string
	switch m.Where {
	case "client":
		ns = env.client.NS.Path()
	case "direct":
		ns = env.direct.NS.Path()
	case "node":
		ns = env.star.Node.Path()
	default:
		return nil, fmt.Errorf("mode %s: unknown client namespace %q", m.Name, m.Where)
	}
	spec := loadgen.Spec{Request: loadgen.Request{
		NetNS: ns, Targets: targets, Kind: kind, Workers: workers,
		Duration: dur, Warmup: warmup, Pool: cfg.Pool, Seed: rand.Uint64(),
	}}
	if m.Cgroup {
		spec.Cgroup = env.cgroup
	}
	c0, err := ctr.read()
	if err != nil {
		return nil, err
	}
	a0, err := procstat.CPU(agent.pid())
	if err != nil {
		return nil, err
	}
	tcp0, err := env.tcpStats()
	if err != nil {
		return nil, err
	}
	s0, err := procstat.CPU(env.servers.Pid())
	if err != nil {
		return nil, fmt.Errorf("server child: %w", errors.Join(err, env.servers.Err()))
	}
	cs0, err := procstat.ReadCPUStat()
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	res, err := loadgen.Run(ctx, spec)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return &point{N: n, Mode: m.Name, Kind: kind, Workers: workers, Rep: rep, Err: err.Error()}, nil
	}
	wall := time.Since(t0).Seconds()
	s1, err := procstat.CPU(env.servers.Pid())
	if err != nil {
		return nil, fmt.Errorf("server child gone: %w", errors.Join(err, env.servers.Err()))
	}
	cs1, err := procstat.ReadCPUStat()
	if err != nil {
		return nil, err
	}
	a1, err := procstat.CPU(agent.pid())
	if err != nil {
		return nil, fmt.Errorf("agent gone: %w", err)
	}
	c1, err := ctr.read()
	if err != nil {
		return nil, err
	}
	tcp1, err := env.tcpStats()
	if err != nil {
		return nil, err
	}
	dt := netstat.Diff(tcp1, tcp0)
	dc := netstat.Diff(c1, c0)
	p := &point{
		N: n, Mode: m.Name, Kind: kind, Workers: workers, Rep: rep,
		Window: res.Window, Rate: res.Rate(), P50: float64(res.P50) / 1e3, P99: float64(res.P99) / 1e3,
		Ops: res.Ops, Errors: res.Errors, ErrKinds: res.ErrKinds, Stuck: res.Stuck,
		ClientUser: res.UserSec, ClientSys: res.SysSec, ClientCPU: res.CPUPct(),
		ServerCPU:  100 * s1.Sub(s0).Self.Seconds() / wall,
		AgentCPU:   100 * a1.Sub(a0).Self.Seconds() / wall,
		ForwardNew: dc["forward_new"], SockConnect: dc["sock_connect"],
		ForwardCT: dc["forward_ct"], ReplyRevNat: dc["reply_revnat"],
		SynRetrans: dt[netstat.SynRetrans], PAWSTimewait: dt[netstat.PAWSTimewait], TWRecycled: dt[netstat.TWRecycled],
	}
	p.MachineBusy, p.Softirq, p.Steal = procstat.BusyPct(cs0, cs1)
	// The client's CPU is over its window only; scale it to the child's life
	// the way the others are measured.
	clientLife := 100 * (res.UserSec + res.SysSec) / wall
	p.OtherCPU = max(0, p.MachineBusy*float64(runtime.NumCPU())-clientLife-p.ServerCPU-p.AgentCPU)
	for k, v := range dc {
		if strings.HasPrefix(k, "drop_") {
			p.Drops += v
		}
	}
	return p, nil
}

// machine describes where the benchmark ran.
type machine = procstat.Machine

func logf(cfg config, format string, args ...any) {
	fmt.Fprintf(cfg.Log, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func nanos(d time.Duration) float64 { return float64(d) }

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
