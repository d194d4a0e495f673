package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/fastpath-net/fastpath/internal/testenv"
	"github.com/fastpath-net/fastpath/test/bench/internal/benchmain"
	"github.com/fastpath-net/fastpath/test/bench/internal/procstat"
	"github.com/fastpath-net/fastpath/test/internal/cplink"
	"github.com/fastpath-net/fastpath/test/internal/testbin"
)

// result is one contender at one N.
type result struct {
	N         int
	Contender string
	Load      string // load average when its measurement began
	// Cold start, from exec: the proxy's log says all is programmed, and
	// every sampled VIP has answered through the node.
	ColdStart, Answer time.Duration
	Detail            syncDetail
	RSS, HWM          uint64 // after the cold start and the idle window
	RSSEnd, HWMEnd    uint64 // after the changes
	IdleRate          float64
	Latencies         []time.Duration // seen changes only
	Timeouts          int             // changes never seen within the limit
	Early             int             // changes seen before the apiserver's answer to the update arrived (counted as 0)
	Probes            int             // probes over all changes
	Window            time.Duration   // wall time of the change window
	CPU               procstat.CPUTime
	CPURaw, CPUNet    time.Duration // per change
	Err               string        // the measurement could not finish
}

type results struct {
	Cfg        config
	Start, End time.Time
	LoadStart  string
	LoadEnd    string
	Machine    procstat.Machine
	Created    map[int]time.Duration // creation time of the Services added for each N
	Rows       []*result
	// Tools is what kube-proxy execs: iptables (legacy or nf_tables
	// backend) and nft, with versions.
	Tools string
	// The headline's data path and cost (empty without -headline).
	Data     []dataPoint
	Costs    []cost
	Counters []counterRow
	// SideErr says why the side-by-side phase was not measured.
	SideErr string
}

// backendAddrs are be1 and be2 in every node (nettopo.Star numbers hosts
// from 1: client, be1, be2).
var backendAddrs = [2]netip.Addr{netip.MustParseAddr("10.250.2.2"), netip.MustParseAddr("10.250.3.2")}

func run(ctx context.Context, cfg config) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces, BPF, a control plane)")
	}
	if err := checkTools(cfg.Contenders); err != nil {
		return err
	}
	kpBin, err := testenv.Binary("kube-proxy")
	if err != nil {
		return fmt.Errorf("kube-proxy: %w (make k8s-tools, or FASTPATH_K8S_BIN)", err)
	}
	collectLeftovers()
	tmp, err := os.MkdirTemp("", "fp-bench-control-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if cfg.AgentBin == "" {
		if cfg.AgentBin, err = testbin.Build(ctx, tmp); err != nil {
			return err
		}
	}
	res := &results{Cfg: cfg, Start: time.Now(), LoadStart: procstat.LoadAvg(), Machine: procstat.DescribeMachine(), Created: map[int]time.Duration{},
		Tools: toolVersions(ctx)}
	logf(cfg, "control-path benchmark: N=%v, contenders %v, %d changes each, load %s", cfg.Ns, cfg.Contenders, cfg.Changes, res.LoadStart)

	env, err := testenv.Start(ctx, testenv.Options{
		ServiceClusterIPRange: "10.96.0.0/16",
		// One more link: the side-by-side phase's second fastpath node.
		ExtraSANs: cplink.SANs(sideLinkNo),
		// The controller-manager is not needed: the slices are hand-made
		// and the namespace goes with the control plane.
		NoControllerManager: true,
		StartTimeout:        3 * time.Minute,
	})
	if err != nil {
		return fmt.Errorf("control plane: %w", err)
	}
	defer func() { err = errors.Join(err, env.Stop()) }()
	objs, err := newObjects(ctx, env.Clientset, backendAddrs)
	if err != nil {
		return err
	}
	if lo, _, ok := pairedNs(cfg); ok {
		logf(cfg, "side-by-side phase: creating its %d Services and EndpointSlices", lo)
		if err := objs.growSide(ctx, lo, func(f string, a ...any) { logf(cfg, f, a...) }); err != nil {
			return err
		}
	}
	for _, n := range cfg.Ns {
		logf(cfg, "N=%d: creating Services and EndpointSlices", n)
		took, err := objs.grow(ctx, n, func(f string, a ...any) { logf(cfg, f, a...) })
		if err != nil {
			return err
		}
		res.Created[n] = took
		logf(cfg, "N=%d: objects ready (%s)", n, took.Round(time.Millisecond))
		if err := benchN(ctx, cfg, env, objs, kpBin, tmp, n, res); err != nil {
			return err
		}
	}
	res.End, res.LoadEnd = time.Now(), procstat.LoadAvg()
	if cfg.Headline {
		if err := writeHeadline(cfg.Out, res); err != nil {
			return err
		}
		logf(cfg, "wrote %s (%s)", filepath.Join(cfg.Out, "README.md"), res.End.Sub(res.Start).Round(time.Second))
		return nil
	}
	if err := writeReport(cfg.Out, res); err != nil {
		return err
	}
	logf(cfg, "wrote %s and %s (%s)", filepath.Join(cfg.Out, "control.md"), filepath.Join(cfg.Out, "control.csv"), res.End.Sub(res.Start).Round(time.Second))
	return nil
}

// benchN measures every contender's control path at n, one after the
// other, each alone: the ones done are paused (SIGSTOP), so their
// reactions to later changes cost nobody CPU. For the headline, their
// nodes stay up with the programming they ended with, and the data path is
// measured on all of them in interleaved rounds before they go.
func benchN(ctx context.Context, cfg config, env *testenv.Env, objs *objects, kpBin, tmp string, n int, res *results) error {
	var live []*running
	defer func() {
		for _, l := range live {
			l.close(cfg)
		}
	}()
	for _, name := range cfg.Contenders {
		r, l, err := measure(ctx, cfg, env, objs, kpBin, tmp, name, n)
		if err != nil {
			return err // only cancellation and harness failures; contender failures are in r
		}
		res.Rows = append(res.Rows, r)
		logResult(cfg, r)
		if l == nil {
			continue
		}
		if !cfg.Headline {
			l.close(cfg)
			continue
		}
		if err := l.p.proc().Pause(); err != nil {
			r.Err = fmt.Sprintf("pause after the control path: %v", err)
			l.close(cfg)
			continue
		}
		live = append(live, l)
	}
	if !cfg.Headline {
		return nil
	}
	if err := dataPath(ctx, cfg, objs, n, live, res); err != nil {
		return err
	}
	if _, hi, ok := pairedNs(cfg); ok && n == hi {
		return sideBySide(ctx, cfg, env, objs, tmp, live, res)
	}
	return nil
}

// running is a contender whose node and process outlive its control-path
// measurement.
type running struct {
	name string
	n    int
	nd   *node
	p    proxy
}

func (l *running) close(cfg config) {
	// What a stop leaves behind is inside the node's namespaces, which go
	// next; say so, but keep measuring.
	if err := l.p.stop(); err != nil {
		logf(cfg, "N=%d %s: stop: %v", l.n, l.name, err)
	}
	if err := l.nd.close(); err != nil {
		logf(cfg, "N=%d %s: remove node: %v", l.n, l.name, err)
	}
}

// shortNames keep interface names (fpc-<tag>) within 15 characters.
var shortNames = map[string]string{"fastpath": "fp", "iptables": "ipt", "nftables": "nft"}

// measure runs one contender at one N on a fresh node and returns it
// still running (nil when it failed: then r says why and everything is
// gone). Only cancellation and a broken harness return an error.
func measure(ctx context.Context, cfg config, env *testenv.Env, objs *objects, kpBin, tmp, name string, n int) (r *result, l *running, err error) {
	r = &result{N: n, Contender: name, Load: procstat.LoadAvg()}
	tag := fmt.Sprintf("%s%d", shortNames[name], n)
	dir := filepath.Join(tmp, tag)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, nil, err
	}
	linkNo := 1
	for i, c := range contenderNames {
		if c == name {
			linkNo = i + 1
		}
	}
	nd, err := newNode(env, tag, linkNo, dir, cfg.Headline && name == "fastpath")
	if err != nil {
		return nil, nil, err
	}
	logf(cfg, "N=%d %s: starting (load %s)", n, name, r.Load)
	p, err := startProxy(name, nd, env, cfg.AgentBin, kpBin)
	if err != nil {
		_ = nd.close()
		return nil, nil, err
	}
	live := &running{name: name, n: n, nd: nd, p: p}
	defer func() {
		if err != nil || r.Err != "" {
			live.close(cfg)
			l = nil
		}
	}()
	if err := coldStart(ctx, p, nd, sample(objs.vips, n), n, r); err != nil {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		r.Err = err.Error()
		logf(cfg, "N=%d %s: %v\n%s", n, name, err, p.proc().Tail(20))
		return r, nil, nil
	}
	pid := p.proc().PID()
	if err := idle(ctx, cfg, pid, r); err != nil {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		r.Err = err.Error()
		return r, nil, nil
	}
	if err := changes(ctx, cfg, p, nd, objs, n, r); err != nil {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		r.Err = err.Error()
		logf(cfg, "N=%d %s: %v\n%s", n, name, err, p.proc().Tail(20))
		return r, nil, nil
	}
	if r.RSSEnd, r.HWMEnd, err = procstat.Mem(pid); err != nil {
		r.Err = err.Error()
		return r, nil, nil
	}
	return r, live, nil
}

// sample picks the VIPs whose answers end the cold start: the last Service
// created and four spread over the others.
func sample(vips []netip.Addr, n int) []netip.Addr {
	idx := map[int]bool{n - 1: true}
	for k := 0; k < 4; k++ {
		idx[k*n/4] = true
	}
	var out []netip.Addr
	for i := range idx {
		out = append(out, vips[i])
	}
	return out
}

// coldLimit bounds a cold start: kube-proxy's iptables mode took 15.6 s
// for its first sync of 10,000 Services here on a quiet machine.
func coldLimit(n int) time.Duration { return 3*time.Minute + time.Duration(n)*30*time.Millisecond }

// coldStart waits until p's log says all n Services are programmed and
// every one of vips answers through nd.
func coldStart(ctx context.Context, p proxy, nd *node, vips []netip.Addr, n int, r *result) error {
	c := p.proc()
	answered := map[netip.Addr]bool{}
	deadline := c.Started.Add(coldLimit(n))
	var syncAt, answerAt time.Time
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := c.Running(); err != nil {
			return err
		}
		if syncAt.IsZero() {
			at, d, ok, err := p.synced(c.Log())
			if err != nil {
				return err
			}
			if ok {
				syncAt, r.Detail = at, d
			}
		}
		for _, vip := range vips {
			if answered[vip] {
				continue
			}
			if name, err := nd.prober.ask(vip); err == nil && name != "" {
				answered[vip] = true
				if len(answered) == len(vips) {
					answerAt = time.Now()
				}
			}
		}
		if !syncAt.IsZero() && !answerAt.IsZero() {
			r.ColdStart, r.Answer = syncAt.Sub(c.Started), answerAt.Sub(c.Started)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not programmed within %s (log says synced: %v; %d of %d sampled VIPs answered)",
				coldLimit(n), !syncAt.IsZero(), len(answered), len(vips))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// idle measures the proxy's CPU over cfg.Idle after its cold start, then its
// memory. Memory is read at the end of that window, not at the first answer:
// a proxy may answer before it hands the cold start's scratch back to the OS
// (fastpath frees it right after programming the maps), and a read racing
// that measured the peak in one run and the settled size in the next.
func idle(ctx context.Context, cfg config, pid int, r *result) error {
	c0, err := procstat.CPU(pid)
	if err != nil {
		return err
	}
	t0 := time.Now()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(cfg.Idle):
	}
	c1, err := procstat.CPU(pid)
	if err != nil {
		return err
	}
	r.IdleRate = c1.Sub(c0).Total().Seconds() / time.Since(t0).Seconds()
	r.RSS, r.HWM, err = procstat.Mem(pid)
	return err
}

// changes makes cfg.Changes EndpointSlice changes.
func changes(ctx context.Context, cfg config, p proxy, nd *node, objs *objects, n int, r *result) error {
	pid := p.proc().PID()
	rng := rand.New(rand.NewPCG(uint64(n), uint64(len(r.Contender))))
	picks := rng.Perm(n)
	w0, err := procstat.CPU(pid)
	if err != nil {
		return err
	}
	start := time.Now()
	done := 0
	for k := 0; k < cfg.Changes; k++ {
		// A slow contender at a large N stops early, after enough changes
		// for a median, so the whole run keeps its time bound.
		if cfg.ChangeBudget > 0 && k >= minChanges && time.Since(start) > cfg.ChangeBudget {
			break
		}
		done++
		if k > 0 && cfg.Gap > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(cfg.Gap):
			}
		}
		i := picks[k%len(picks)]
		port, accepted, err := objs.flip(ctx, i)
		if err != nil {
			return err
		}
		seen, probes, err := nd.prober.waitPort(ctx, objs.vips[i], port, cfg.ChangeLimit)
		r.Probes += probes
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r.Timeouts++
			continue
		}
		// A probe can see the change before the apiserver's answer to the
		// update arrives here: that counts as 0.
		lat := seen.Sub(accepted)
		if lat < 0 {
			r.Early++
		}
		r.Latencies = append(r.Latencies, max(0, lat))
		if err := p.proc().Running(); err != nil {
			return err
		}
	}
	r.Window = time.Since(start)
	w1, err := procstat.CPU(pid)
	if err != nil {
		return err
	}
	r.CPU = w1.Sub(w0)
	r.CPURaw, r.CPUNet = cpuPerChange(r.CPU.Total(), r.Window, done, r.IdleRate)
	return nil
}

// minChanges are made whatever -change-budget says.
const minChanges = 10

func logResult(cfg config, r *result) {
	if r.Err != "" {
		logf(cfg, "N=%-6d %-9s FAILED: %s", r.N, r.Contender, r.Err)
		return
	}
	logf(cfg, "N=%-6d %-9s cold start %6s (answers %6s, sync %s, informers %s)  change p50 %6s p99 %6s (%d not seen, %d before the answer)  CPU/change %5.1fms (net %5.1fms, idle %.1fms/s)  RSS %s",
		r.N, r.Contender, ms(r.ColdStart), ms(r.Answer), ms(r.Detail.Sync), ms(r.Detail.Informer),
		ms(benchmain.Quantile(r.Latencies, 0.5)), ms(benchmain.Quantile(r.Latencies, 0.99)), r.Timeouts, r.Early,
		msf(r.CPURaw), msf(r.CPUNet), 1000*r.IdleRate, mib(r.RSS))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", msf(d)) }

func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
