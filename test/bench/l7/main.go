// Command l7 measures the L7 proxy against the same path with L4 policy
// only (issue 6's budget): requests/s and p50/p99 latency at 1 and 64
// keep-alive connections, in one run, with the proxy on one core (taskset
// + GOMAXPROCS=1); and the proxy's RSS with 1,000 idle keep-alive
// connections. It measures only; it writes docs/benchmarks/l7.md.
//
// The real path (topo.go): a client and a server pod in fp- namespaces on
// one node namespace with the datapath attached as the agent attaches it;
// the server's ingress allows one port at L4 and another with HTTP rules,
// which tc_policy redirects to the agent's proxy code (internal/l7proxy
// on l7redirect's transparent listener). The two paths are measured
// interleaved: closed loop for the rate, and paced at the same offered
// load for the latency at many connections (closed-loop latency there is
// only queueing). A loopback run of the proxy alone (-loopback) gives its
// capacity on one core. Processes: the proxy (CPU 0, node namespace),
// the upstream and the load generator (CPU 1, server and client
// namespaces), and this orchestrator. Needs root.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/fastpath-net/fastpath/test/bench/internal/benchmain"
)

type config struct {
	out      string
	duration time.Duration
	reps     int
	conns    []int
	idle     int
	loopback bool
	// cpuProfile: where the real path's proxy writes its CPU profile.
	cpuProfile string
}

func parse(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("l7", flag.ContinueOnError)
	fs.StringVar(&c.out, "out", "docs/benchmarks", "directory for l7.md")
	fs.DurationVar(&c.duration, "duration", 3*time.Second, "length of one measured point")
	fs.IntVar(&c.reps, "reps", 3, "repetitions of every point (median reported)")
	conns := fs.String("conns", "1,64", "concurrent keep-alive connections per point")
	fs.IntVar(&c.idle, "idle", 1000, "idle keep-alive connections for the RSS point")
	fs.BoolVar(&c.loopback, "loopback", true, "also measure the proxy on loopback, without the datapath (secondary table)")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write the CPU profile of the real path's proxy to this file (go tool pprof)")
	quick := fs.Bool("quick", false, "short run: 1s points, 1 repetition")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if *quick {
		if err := benchmain.Preset(fs, map[string]string{"duration": "1s", "reps": "1"}); err != nil {
			return c, err
		}
	}
	var err error
	if c.conns, err = benchmain.IntList(*conns, 1, 4096); err != nil {
		return c, fmt.Errorf("-conns: %w", err)
	}
	return c, nil
}

func main() {
	switch os.Getenv(roleEnv) {
	case "upstream":
		upstreamMain()
	case "proxy":
		proxyMain()
	case "loadgen":
		loadgenMain()
	default:
		benchmain.Main("l7", parse, func(ctx context.Context, c config) error { return run(ctx, c) })
	}
}
