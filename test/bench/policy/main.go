// Command policy measures NetworkPolicy enforcement against issue 5's
// budget and writes docs/benchmarks/policy.md and policy.csv. It asserts
// nothing.
//
//	make bench-policy                               # as root, about 5 minutes
//	go run ./test/bench/policy -out /tmp/bench      # the same by hand
//
// It brings up the lab (internal/lab: a real etcd and kube-apiserver,
// -nodes nodes in fp-pb<pid>-* network namespaces, a fastpath-agent with
// --enable-policy on each, real pods attached by fastpath-cni: web-0..2
// serving TCP 8000 and 8080, and a client), then adds the bulk: Pod
// objects with status.podIP set, spread over the nodes (no kubelet exists:
// no container is behind them, but every agent computes their identities
// and ipcache entries, and the policy of those on its node), so that the
// cluster holds -pods pods, in -namespaces namespaces, and -policies
// NetworkPolicies of five realistic shapes (objects.go). Then:
//
//   - bulk load: each agent's CPU from the first write of the bulk until
//     its pinned ipcache knows every bulk pod by a cluster identity;
//   - changes, -changes of each kind: a policy added, deleted, its port
//     updated; a pod label and a namespace label that a policy's peer
//     selector reads. Each opens one port of the web pods to the client
//     (and, but for add and delete, closes the other). Latency: from the
//     apiserver's answer to the write until a connection from the client
//     pod to a web pod on EVERY node gets through (probes 1 ms apart, a
//     connect timeout of 5 ms growing to a tenth of the wait), and until
//     connections to the closed port are
//     dropped (100 ms timeout, three in a row). Plus label changes of bulk
//     pods, seen in every node's pinned fp_ipcache;
//   - cold computation: each agent restarted in turn, its CPU (/proc) from
//     exec until its log says the policy maps hold the informers' first
//     state;
//   - connection rate to one web pod selected by 1 policy and by
//     -policies policies (a label on the pod toggles the extra ones),
//     alternately, same run, same client, with the generator's own
//     ceiling on loopback.
//
// Everything lives in the lab's fp-pb<pid>-* namespaces, /run/fastpath-pb<pid>
// and /sys/fs/bpf/fastpath-pb<pid>, removed at the end, also on failure and
// on Ctrl-C.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fastpath-net/fastpath/test/bench/internal/benchmain"
)

type config struct {
	Out         string
	Nodes       int
	Pods        int // in the cluster, the lab's real pods included
	Namespaces  int // the lab's own included
	Policies    int
	Changes     int           // of each kind
	Gap         time.Duration // pause after a change was seen
	ChangeLimit time.Duration
	RateWorkers int
	RateWindow  time.Duration
	RateReps    int
	Bin         string // fastpath-agent, fastpath-bgp, fastpath-cni, fastpath-lab, fastpathctl; "": go build them
	Pprof       string // directory for the agents' CPU profiles of the bulk load; "": none
	Command     string
	ID          string // names the lab: fp-<ID>-*
	Log         io.Writer
}

// realPods are the lab's demo pods (web-0..2 and the client).
const realPods = 4

func (c config) bulkPods() int { return c.Pods - realPods }

func defaultConfig() config {
	return config{
		Out: "docs/benchmarks", Nodes: 2, Pods: 1000, Namespaces: 10, Policies: 500,
		Changes: 20, Gap: 200 * time.Millisecond, ChangeLimit: 30 * time.Second,
		RateWorkers: 2, RateWindow: 2 * time.Second, RateReps: 5,
		ID: fmt.Sprintf("pb%d", os.Getpid()), Log: os.Stderr,
	}
}

func main() { benchmain.Main("bench-policy", parseFlags, run) }

func parseFlags(args []string) (config, error) {
	cfg := defaultConfig()
	fs := flag.NewFlagSet("bench-policy", flag.ContinueOnError)
	fs.StringVar(&cfg.Out, "out", cfg.Out, "directory for policy.md and policy.csv")
	fs.IntVar(&cfg.Nodes, "nodes", cfg.Nodes, "nodes (2..9)")
	fs.IntVar(&cfg.Pods, "pods", cfg.Pods, "pods in the cluster, the lab's 4 real ones included")
	fs.IntVar(&cfg.Namespaces, "namespaces", cfg.Namespaces, "namespaces holding them, the lab's included")
	fs.IntVar(&cfg.Policies, "policies", cfg.Policies, "NetworkPolicies in the cluster; also how many select the rate target")
	fs.IntVar(&cfg.Changes, "changes", cfg.Changes, "changes measured of each kind")
	fs.DurationVar(&cfg.Gap, "gap", cfg.Gap, "pause after a change was seen")
	fs.DurationVar(&cfg.ChangeLimit, "change-limit", cfg.ChangeLimit, "longest wait for one change")
	fs.IntVar(&cfg.RateWorkers, "rate-workers", cfg.RateWorkers, "connection-rate generator threads in the client pod")
	fs.DurationVar(&cfg.RateWindow, "rate-window", cfg.RateWindow, "length of one connection-rate window")
	fs.IntVar(&cfg.RateReps, "rate-reps", cfg.RateReps, "connection-rate windows of each kind, alternating")
	fs.StringVar(&cfg.Bin, "bin", "", "directory with prebuilt fastpath-agent, fastpath-bgp, fastpath-cni, fastpath-lab and fastpathctl (default: go build them)")
	fs.StringVar(&cfg.Pprof, "pprof", "", "directory for CPU profiles of every agent over the bulk load (agents get --pprof-addr "+pprofAddr+")")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	for _, p := range []*string{&cfg.Bin, &cfg.Pprof} {
		if *p != "" {
			abs, err := filepath.Abs(*p)
			if err != nil {
				return cfg, err
			}
			*p = abs
		}
	}
	cfg.Command = strings.TrimSpace("go run ./test/bench/policy " + strings.Join(args, " "))
	return cfg, cfg.validate()
}

func (c *config) validate() error {
	switch {
	case c.Nodes < 2 || c.Nodes > 9:
		return errors.New("-nodes: 2..9 (changes are seen on every node, so at least two)")
	case c.Namespaces < 1 || c.Namespaces > 250:
		return errors.New("-namespaces: 1..250")
	case c.Pods < realPods || c.Pods > 60000:
		return fmt.Errorf("-pods: %d..60000", realPods)
	case c.Policies < 2 || c.Policies > 5000:
		return errors.New("-policies: 2..5000")
	case c.Changes < 1 || c.Changes > 1000:
		return errors.New("-changes: 1..1000")
	case c.RateWorkers < 1 || c.RateWorkers > 64 || c.RateReps < 1 || c.RateWindow <= 0:
		return errors.New("-rate-workers 1..64, -rate-reps >= 1, -rate-window > 0")
	case c.Gap < 0 || c.ChangeLimit <= 0 || c.ChangeLimit > 10*time.Minute:
		return errors.New("-gap >= 0, -change-limit in (0, 10m]")
	case c.Out == "":
		return errors.New("-out is required")
	}
	return nil
}

func logf(cfg config, format string, args ...any) {
	fmt.Fprintf(cfg.Log, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond)) }
