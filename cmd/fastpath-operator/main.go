// Command fastpath-operator runs the cluster-wide controllers of fastpath:
// today LB IPAM (internal/lbipam), which gives type=LoadBalancer Services
// addresses from FastpathLoadBalancerIPPools. It is a Deployment of its
// own (deploy/operator), not part of the agent: one allocator works at a
// time behind a Lease, and writing Service statuses is a right the
// per-node agents do not need.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/fastpath-net/fastpath/internal/k8s"
	"github.com/fastpath-net/fastpath/internal/lbipam"
)

func main() {
	err := run(os.Args[1:], os.Stderr)
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "fastpath-operator:", err)
		os.Exit(1)
	}
}

type options struct {
	kubeconfig  string
	leaderElect bool
	election    lbipam.Election
	logLevel    slog.Level
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("fastpath-operator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	host, _ := os.Hostname()
	o := &options{election: lbipam.DefaultElection(host)}
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file; empty: the pod's ServiceAccount")
	fs.BoolVar(&o.leaderElect, "leader-elect", true, "allocate only while holding the Lease; false only when a single instance runs")
	fs.StringVar(&o.election.Namespace, "leader-elect-namespace", o.election.Namespace, "namespace of the Lease")
	fs.StringVar(&o.election.Name, "leader-elect-lease", o.election.Name, "name of the Lease")
	fs.StringVar(&o.election.Identity, "leader-elect-identity", o.election.Identity, "this instance in the Lease, unique (the pod name)")
	fs.DurationVar(&o.election.LeaseDuration, "leader-elect-lease-duration", o.election.LeaseDuration, "how long a standby waits after the last renewal of a leader that vanished")
	fs.DurationVar(&o.election.RenewDeadline, "leader-elect-renew-deadline", o.election.RenewDeadline, "how long the leader retries renewing before it stops allocating; below the lease duration")
	fs.DurationVar(&o.election.RetryPeriod, "leader-elect-retry-period", o.election.RetryPeriod, "pause between tries to acquire or renew")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err := o.logLevel.UnmarshalText([]byte(*logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", *logLevel, err)
	}
	e := o.election
	switch {
	case o.leaderElect && e.Identity == "":
		return nil, errors.New("--leader-elect-identity: empty (and no host name to default to)")
	case o.leaderElect && (e.RetryPeriod <= 0 || e.RenewDeadline <= e.RetryPeriod || e.LeaseDuration <= e.RenewDeadline):
		return nil, fmt.Errorf("--leader-elect-*: want 0 < retry period (%s) < renew deadline (%s) < lease duration (%s)", e.RetryPeriod, e.RenewDeadline, e.LeaseDuration)
	}
	return o, nil
}

func run(args []string, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: o.logLevel}))
	// client-go (leader election, informers) logs through klog: into
	// this log, in its format.
	klog.SetSlogLogger(log)
	cfg, err := k8s.RESTConfig(o.kubeconfig)
	if err != nil {
		return err
	}
	cfg.UserAgent = lbipam.Component
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var runErr error
	allocate := func(ctx context.Context) { runErr = lbipam.NewController(client, dyn, log).Run(ctx) }
	if !o.leaderElect {
		allocate(ctx)
		return runErr
	}
	if err := lbipam.RunLeaderElected(ctx, client, o.election, log, allocate); err != nil {
		return err
	}
	if runErr == nil && ctx.Err() == nil {
		// Leadership lost: exit so that the restarted pod starts from the
		// API's state, not a view that may be stale.
		runErr = errors.New("lost the Lease " + o.election.Namespace + "/" + o.election.Name)
	}
	return runErr
}
