package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/fastpath-net/fastpath/internal/identity"
	"github.com/fastpath-net/fastpath/internal/lab"
	"github.com/fastpath-net/fastpath/internal/nettopo"
	"github.com/fastpath-net/fastpath/test/bench/internal/procstat"
	"github.com/fastpath-net/fastpath/test/internal/nsproc"
	"github.com/fastpath-net/fastpath/test/internal/testbin"
)

// bench is one run's lab and probes.
type bench struct {
	cfg     config
	labOpts lab.Options
	cs      kubernetes.Interface
	// targets are one web pod per node (probed from the client pod), with
	// two probing threads each: open waits for connections to get
	// through, deny for them to be dropped.
	targets     []netip.Addr
	targetNames []string
	open, deny  []*prober
	caches      []*ipcache // every node's pinned fp_ipcache
	// The connection-rate target: a web pod on the client's node.
	rateIdx    int
	rateName   string
	rateTarget netip.Addr
	closers    []func()
}

type results struct {
	Cfg                config
	Start, End         time.Time
	LoadStart, LoadEnd string
	Machine            procstat.Machine
	Targets            []string
	LabUp, BulkCreated time.Duration
	Bulk               []bulkRow
	Changes            []*series
	Cold               []coldRow
	Rate               []rateRow
	Identities         int
	RateTarget         string
	Err                string // the run ended early: what it measured is in the report
}

func run(ctx context.Context, cfg config) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces, BPF, a control plane)")
	}
	res := &results{Cfg: cfg, Start: time.Now(), LoadStart: procstat.LoadAvg(), Machine: procstat.DescribeMachine()}
	logf(cfg, "policy benchmark: %d nodes, %d pods, %d namespaces, %d policies, %d changes of each kind; load %s",
		cfg.Nodes, cfg.Pods, cfg.Namespaces, cfg.Policies, cfg.Changes, res.LoadStart)
	if cfg.Bin == "" {
		tmp, err := os.MkdirTemp("", "fp-bench-policy-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		if err := testbin.BuildInto(ctx, tmp, "./cmd/fastpath-agent", "./cmd/fastpath-bgp", "./cmd/fastpath-cni", "./cmd/fastpath-lab", "./cmd/fastpathctl"); err != nil {
			return err
		}
		cfg.Bin = tmp
	}

	// The lab under names of this run's own, so that it runs beside a
	// user's `make lab` and other runs.
	lab.Base, lab.StateDir, lab.PinDir = "fp-"+cfg.ID, "/run/fastpath-"+cfg.ID, "/sys/fs/bpf/fastpath-"+cfg.ID
	defer func() {
		if derr := lab.Down(io.Discard); derr != nil {
			err = errors.Join(err, fmt.Errorf("lab down: %w", derr))
		}
	}()
	b := &bench{cfg: cfg, labOpts: lab.Options{Nodes: cfg.Nodes, Bin: cfg.Bin}}
	if cfg.Pprof != "" {
		b.labOpts.AgentArgs = []string{"--pprof-addr", pprofAddr}
	}
	t0 := time.Now()
	if err := lab.Up(ctx, b.labOpts, cfg.Log); err != nil {
		return fmt.Errorf("lab up: %w", err)
	}
	res.LabUp = time.Since(t0)
	defer b.close()
	if err := b.setup(ctx); err != nil {
		return err
	}
	for t := range b.targets {
		res.Targets = append(res.Targets, fmt.Sprintf("%s on %s (%s)", b.targetNames[t], lab.NodeName(t+1), b.targets[t]))
	}
	res.RateTarget = b.rateName

	nodeIPs, err := b.nodeIPs(ctx)
	if err != nil {
		return err
	}
	if err := b.measure(ctx, res, nodeIPs); err != nil {
		// What was measured is still worth reading.
		res.Err = err.Error()
		res.End, res.LoadEnd = time.Now(), procstat.LoadAvg()
		if werr := writeReport(cfg.Out, res); werr != nil {
			err = errors.Join(err, werr)
		}
		return err
	}
	res.End, res.LoadEnd = time.Now(), procstat.LoadAvg()
	if err := writeReport(cfg.Out, res); err != nil {
		return err
	}
	logf(cfg, "wrote %s and %s (%s)", filepath.Join(cfg.Out, "policy.md"), filepath.Join(cfg.Out, "policy.csv"), res.End.Sub(res.Start).Round(time.Second))
	return nil
}

// measure runs the measurements in turn, filling res.
func (b *bench) measure(ctx context.Context, res *results, nodeIPs map[string]string) (err error) {
	if res.BulkCreated, res.Bulk, err = b.loadBulk(ctx, nodeIPs); err != nil {
		return err
	}
	if ids, err := b.identities(); err == nil {
		res.Identities = ids
	}
	if res.Changes, err = b.changeSeries(ctx); err != nil {
		return err
	}
	if res.Cold, err = b.coldStarts(ctx); err != nil {
		return err
	}
	res.Rate, err = b.rateSeries(ctx)
	return err
}

// setup finds the web pod of every node and opens the probes and the
// nodes' ipcaches.
func (b *bench) setup(ctx context.Context) error {
	cs, release, err := lab.Client()
	if err != nil {
		return err
	}
	b.cs = cs
	b.closers = append(b.closers, release)
	pods, err := cs.CoreV1().Pods(lab.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		return err
	}
	var client *corev1.Pod
	if client, err = cs.CoreV1().Pods(lab.Namespace).Get(ctx, "client", metav1.GetOptions{}); err != nil {
		return err
	}
	b.rateIdx = -1
	for i := 1; i <= b.cfg.Nodes; i++ {
		found := false
		for _, p := range pods.Items {
			if p.Spec.NodeName != lab.NodeName(i) {
				continue
			}
			ip, err := netip.ParseAddr(p.Status.PodIP)
			if err != nil {
				return fmt.Errorf("pod %s: status.podIP %q: %w", p.Name, p.Status.PodIP, err)
			}
			b.targets, b.targetNames = append(b.targets, ip), append(b.targetNames, p.Name)
			if p.Spec.NodeName == client.Spec.NodeName && b.rateIdx < 0 {
				b.rateIdx, b.rateName, b.rateTarget = len(b.targets)-1, p.Name, ip
			}
			found = true
			break
		}
		if !found {
			return fmt.Errorf("no web pod on %s", lab.NodeName(i))
		}
	}
	if b.rateIdx < 0 {
		return errors.New("no web pod on the client's node")
	}
	ns, err := nettopo.OpenNS(lab.PodNS("client"))
	if err != nil {
		return err
	}
	defer ns.Release()
	for range b.targets {
		for _, list := range []*[]*prober{&b.open, &b.deny} {
			p, err := nsproc.NewThread(ns)
			if err != nil {
				return err
			}
			*list = append(*list, p)
		}
	}
	for i := 1; i <= b.cfg.Nodes; i++ {
		c, err := openIPCache(lab.NodePinDir(i))
		if err != nil {
			return err
		}
		b.caches = append(b.caches, c)
	}
	return nil
}

func (b *bench) close() {
	for _, p := range append(b.open, b.deny...) {
		p.Close()
	}
	for _, c := range b.caches {
		c.close()
	}
	for _, f := range b.closers {
		f()
	}
}

// nodeIPs are the nodes' InternalIPs by name, for the bulk pods' hostIP.
func (b *bench) nodeIPs(ctx context.Context) (map[string]string, error) {
	nodes, err := b.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, n := range nodes.Items {
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				out[n.Name] = a.Address
			}
		}
	}
	return out, nil
}

// identities counts the distinct cluster identities node 1 judges the
// bulk pods by.
func (b *bench) identities() (int, error) {
	seen := map[identity.ID]bool{}
	for j := range b.cfg.bulkPods() {
		id, err := b.caches[0].identity(bulkPodIP(j))
		if err != nil {
			return 0, err
		}
		seen[id] = true
	}
	return len(seen), nil
}
