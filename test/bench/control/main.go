// Command control measures fastpath's control path against issue 3's
// budget, beside the real kube-proxy in iptables and nftables mode, all fed
// by ONE real kube-apiserver (internal/testenv) in the same run, and writes
// docs/benchmarks/control.md and control.csv.
//
//	make bench-control                   # N = 100, 1,000, 10,000; 50 changes each
//	make bench-control BENCH_QUICK=1     # -quick: N = 100, 1,000; 20 changes
//	go run ./test/bench/control -quick -out /tmp/bench   # as root
//
// For each N the Services (ClusterIP, port 80, no selector) and their
// hand-made EndpointSlices (two endpoints each) are created once; then each
// contender in turn gets a fresh node (fp- network namespaces: a router
// with a client and two backends, linked to the control plane's namespace)
// and a fresh process, and the benchmark measures:
//
//   - cold start: from exec until the proxy's log reports its first complete
//     programming of all Services (fastpath: the first full "datapath
//     programmed"; kube-proxy: the first "SyncProxyRules complete"), and
//     until a sample of VIPs (the last Service created and four spread over
//     the rest) answers through the node;
//   - change latency: an EndpointSlice update moves one Service's endpoints
//     to the other port; from the apiserver's answer to the update until a
//     TCP probe from the client namespace through the VIP reaches a backend
//     on the new port (probes 1 ms apart), median and p99;
//   - CPU per change: utime+stime of the proxy and its reaped children
//     (/proc/PID/stat) over the change window, divided by the changes, raw
//     and net of its idle CPU rate measured just before;
//   - RSS (VmRSS, VmHWM) after the cold start and the idle window, and at
//     the end.
//
// It asserts nothing and never fails for a slow contender: a contender that
// does not sync or see a change in time is reported as such. Everything
// lives in fp-bc<pid>-* network namespaces and bpffs directories and the
// testenv's fp-cp-* namespace, removed at the end, also on failure and on
// Ctrl-C (a killed run's leftovers are removed by the next run).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/fastpath-net/fastpath/test/bench/internal/benchmain"
	"github.com/fastpath-net/fastpath/test/bench/internal/loadgen"
)

type config struct {
	Out         string        // directory for control.md and control.csv
	Ns          []int         // numbers of Services, ascending
	Changes     int           // changes measured per contender and N
	Gap         time.Duration // pause after a change was seen, before the next
	Idle        time.Duration // window measuring a contender's idle CPU
	ChangeLimit time.Duration // longest wait for one change to be seen
	// ChangeBudget stops a contender's changes once they took this long
	// (after minChanges); 0: no bound.
	ChangeBudget time.Duration
	Contenders   []string
	AgentBin     string // prebuilt fastpath-agent; "": go build one
	Command      string // how the run was started, for the report
	Log          io.Writer

	// Headline adds the data path (issue 9): every contender's node stays
	// up after its control path, and the load generator measures them all,
	// plus fastpath's socket LB and the direct path, in interleaved rounds.
	// The report is README.md with charts.
	Headline bool
	Data     dataConfig
}

// dataConfig is the data path's part of a headline run.
type dataConfig struct {
	Workers      []int         // load-generator workers for connections and requests
	Reps         int           // interleaved rounds; medians and spread are over them
	Window       time.Duration // measured window of a new-connection point
	LatWindow    time.Duration // of a kept-alive request point
	StreamWindow time.Duration // of a single-stream throughput point
	Warmup       time.Duration // load before each window, not counted
	Pool         int           // kept-alive connections per worker
	// PairedReps are the side-by-side phase's repetitions (sidebyside.go):
	// bench-datapath's phase found the median of six good to about 2.5 %.
	PairedReps int
}

func defaultConfig() config {
	return config{
		Out:          "docs/benchmarks",
		Ns:           []int{100, 1000, 10000},
		Changes:      50,
		Gap:          time.Second,
		Idle:         5 * time.Second,
		ChangeLimit:  60 * time.Second,
		ChangeBudget: 3 * time.Minute,
		Contenders:   contenderNames,
		Log:          os.Stderr,
		Data: dataConfig{
			Workers: []int{1, 4}, Reps: 5, Window: time.Second, LatWindow: 500 * time.Millisecond,
			StreamWindow: time.Second, Warmup: 200 * time.Millisecond, Pool: 16, PairedReps: 12,
		},
	}
}

func main() {
	if loadgen.IsChild() {
		os.Exit(loadgen.Main())
	}
	benchmain.Main("bench-control", parseFlags, run)
}

func parseFlags(args []string) (config, error) {
	cfg := defaultConfig()
	fs := flag.NewFlagSet("bench-control", flag.ContinueOnError)
	fs.StringVar(&cfg.Out, "out", cfg.Out, "directory for control.md and control.csv")
	ns := fs.String("n", "100,1000,10000", "numbers of Services, comma-separated")
	fs.IntVar(&cfg.Changes, "changes", cfg.Changes, "changes measured per contender and N")
	fs.DurationVar(&cfg.Gap, "gap", cfg.Gap, "pause between a change being seen and the next change (kube-proxy's default min sync period is 1s)")
	fs.DurationVar(&cfg.Idle, "idle", cfg.Idle, "window measuring each contender's idle CPU before the changes")
	fs.DurationVar(&cfg.ChangeLimit, "change-limit", cfg.ChangeLimit, "longest wait for one change to be seen")
	fs.DurationVar(&cfg.ChangeBudget, "change-budget", cfg.ChangeBudget, "stop a contender's changes once they took this long, after 10 (0: make all -changes)")
	contenders := fs.String("contenders", strings.Join(contenderNames, ","), "contenders, comma-separated: fastpath, iptables, nftables")
	fs.StringVar(&cfg.AgentBin, "agent", "", "prebuilt fastpath-agent binary (default: go build one into a temp dir)")
	fs.BoolVar(&cfg.Headline, "headline", false, "the headline comparison (make bench): also the data path of every contender, fastpath's socket LB and the direct path; writes README.md, CSVs and charts. Default N = 100,1000,5000,10000,20000")
	workers := fs.String("workers", "1,4", "headline: load-generator workers, comma-separated")
	fs.IntVar(&cfg.Data.Reps, "reps", cfg.Data.Reps, "headline: interleaved rounds of the data path (medians and spread over them)")
	fs.DurationVar(&cfg.Data.Window, "window", cfg.Data.Window, "headline: measured window of a new-connection point")
	fs.DurationVar(&cfg.Data.LatWindow, "latency-window", cfg.Data.LatWindow, "headline: measured window of a kept-alive request point")
	fs.DurationVar(&cfg.Data.StreamWindow, "stream-window", cfg.Data.StreamWindow, "headline: measured window of a throughput point")
	fs.DurationVar(&cfg.Data.Warmup, "warmup", cfg.Data.Warmup, "headline: load before each window, not counted")
	fs.IntVar(&cfg.Data.Pool, "pool", cfg.Data.Pool, "headline: kept-alive connections per worker")
	fs.IntVar(&cfg.Data.PairedReps, "paired-reps", cfg.Data.PairedReps, "headline: repetitions of the side-by-side phase of the smallest and the largest N (even: mirrored orders alike)")
	quick := fs.Bool("quick", false, "short run: N = 100,1000 (headline: 100,1000,5000), 20 changes, 2s idle window, 3 rounds of 0.5s windows (flags given explicitly win)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *quick {
		preset := map[string]string{"n": "100,1000", "changes": "20", "idle": "2s"}
		if cfg.Headline {
			preset = map[string]string{"n": "100,1000,5000", "changes": "20", "idle": "2s",
				"reps": "3", "paired-reps": "4", "window": "500ms", "latency-window": "300ms", "stream-window": "500ms", "warmup": "100ms"}
		}
		if err := benchmain.Preset(fs, preset); err != nil {
			return cfg, err
		}
	}
	// After -quick's: a preset counts as given.
	if cfg.Headline {
		if err := benchmain.Preset(fs, map[string]string{"n": "100,1000,5000,10000,20000"}); err != nil {
			return cfg, err
		}
	}
	var err error
	if cfg.Data.Workers, err = benchmain.IntList(*workers, 1, 16); err != nil {
		return cfg, fmt.Errorf("-workers: %w", err)
	}
	if cfg.Ns, err = benchmain.IntList(*ns, 1, 50000); err != nil {
		return cfg, fmt.Errorf("-n: %w", err)
	}
	cfg.Contenders = nil
	for _, c := range strings.Split(*contenders, ",") {
		c = strings.TrimSpace(c)
		if !isContender(c) {
			return cfg, fmt.Errorf("-contenders: %q is not one of %s", c, strings.Join(contenderNames, ", "))
		}
		cfg.Contenders = append(cfg.Contenders, c)
	}
	if cfg.AgentBin != "" {
		// The agent runs with its own working directory.
		if cfg.AgentBin, err = filepath.Abs(cfg.AgentBin); err != nil {
			return cfg, fmt.Errorf("-agent: %w", err)
		}
		if _, err := os.Stat(cfg.AgentBin); err != nil {
			return cfg, fmt.Errorf("-agent: %w", err)
		}
	}
	cfg.Command = strings.TrimSpace("go run ./test/bench/control " + strings.Join(args, " "))
	return cfg, cfg.validate()
}

func isContender(name string) bool {
	for _, c := range contenderNames {
		if c == name {
			return true
		}
	}
	return false
}

func (c *config) validate() error {
	switch {
	case len(c.Ns) == 0 || len(c.Contenders) == 0:
		return errors.New("need at least one -n and one contender")
	case c.Changes < 1 || c.Changes > 10000:
		return errors.New("-changes: 1..10000")
	case c.Gap < 0 || c.Idle <= 0 || c.ChangeLimit <= 0 || c.ChangeBudget < 0:
		return errors.New("-gap must not be negative, -idle and -change-limit must be positive")
	case c.Idle > 10*time.Minute || c.Gap > 10*time.Minute || c.ChangeLimit > 10*time.Minute:
		return errors.New("durations above 10 minutes are surely a mistake")
	case c.Out == "":
		return errors.New("-out is required")
	case c.Headline && (c.Data.Reps < 1 || c.Data.Reps > 100):
		return errors.New("-reps: 1..100")
	case c.Headline && (c.Data.PairedReps < 1 || c.Data.PairedReps > 100):
		return errors.New("-paired-reps: 1..100")
	case c.Headline && (c.Data.Window <= 0 || c.Data.LatWindow <= 0 || c.Data.StreamWindow <= 0 || c.Data.Warmup < 0):
		return errors.New("-window, -latency-window and -stream-window must be positive, -warmup not negative")
	case c.Headline && (c.Data.Window > time.Minute || c.Data.LatWindow > time.Minute || c.Data.StreamWindow > time.Minute):
		return errors.New("data-path windows above a minute are surely a mistake")
	case c.Headline && (c.Data.Pool < 1 || c.Data.Pool > 1024):
		return errors.New("-pool: 1..1024")
	case c.Headline && len(c.Contenders) != len(contenderNames):
		return errors.New("-headline measures every contender: leave out -contenders")
	}
	for i := 1; i < len(c.Ns); i++ {
		if c.Ns[i] <= c.Ns[i-1] {
			return errors.New("-n: give the numbers in ascending order (objects are created once and only added)")
		}
	}
	return nil
}

// checkTools finds what kube-proxy execs inside its namespace.
func checkTools(contenders []string) error {
	need := map[string]string{}
	for _, c := range contenders {
		switch c {
		case "iptables":
			need["iptables-restore"], need["iptables-save"] = "iptables", "iptables"
		case "nftables":
			need["nft"] = "nftables"
		}
	}
	for tool, pkg := range need {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found: kube-proxy needs Debian's %s package (hack/install-deps.sh installs it)", tool, pkg)
		}
	}
	return nil
}

// toolVersions names the iptables (and its backend) and nft that kube-proxy
// runs, for the report.
func toolVersions(ctx context.Context) string {
	var out []string
	for _, cmd := range [][]string{{"iptables", "-V"}, {"nft", "-v"}} {
		b, err := exec.CommandContext(ctx, cmd[0], cmd[1:]...).Output()
		if err != nil {
			continue
		}
		out = append(out, strings.TrimSpace(string(b)))
	}
	return strings.Join(out, ", ")
}

func logf(cfg config, format string, args ...any) {
	fmt.Fprintf(cfg.Log, time.Now().Format("15:04:05 ")+format+"\n", args...)
}
