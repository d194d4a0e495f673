package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"

	"github.com/fastpath-net/fastpath/internal/testenv"
	"github.com/fastpath-net/fastpath/test/bench/internal/loadgen"
	"github.com/fastpath-net/fastpath/test/bench/internal/procstat"
	"github.com/fastpath-net/fastpath/test/bench/internal/rounds"
)

// The headline's "rate at the largest N vs the smallest", side by side.
//
// The per-N blocks run minutes apart, and on this machine the direct path
// itself, which has no Service, moved between them by as much as the
// claim allows fastpath to: a ratio of two blocks measures the machine's
// drift as much as the number of Services. The apiserver holds every
// Service at once, so here a second fastpath node, its agent started with
// --service-proxy-name, serves the smallest N of Services of its own
// (labelled for it: kube-proxy and the main agent skip them) while the main
// node still serves the largest N. Legs of both alternate within every
// repetition in an order whose mean time is the same for both counts
// (rounds.Paired), so a drift linear over the repetition cancels from the
// ratio. Unlike bench-datapath's phase the two counts are two nodes (same
// topology and programs, each its own conntrack and backend servers).

// kindPaired marks the new-connection points of this phase, so they never
// mix with the per-N blocks' (loadgen.KindConn).
const kindPaired = "conn-paired"

// sideLinkNo is the second fastpath node's control-plane link, after the
// contenders'.
var sideLinkNo = len(contenderNames) + 1

// pairedNs are the two Service counts the phase compares, or false when
// the run has no smaller and larger N or the smaller is more Services
// than the side's addresses hold.
func pairedNs(cfg config) (lo, hi int, ok bool) {
	lo, hi = cfg.Ns[0], cfg.Ns[len(cfg.Ns)-1]
	return lo, hi, cfg.Headline && lo < hi && lo <= sideMax
}

// sideBySide runs the phase after the largest N's data rounds, while live
// (that N's nodes) still serve. A side node that cannot start is reported,
// not fatal: the per-N blocks stand without it.
func sideBySide(ctx context.Context, cfg config, env *testenv.Env, objs *objects, tmp string, live []*running, res *results) error {
	lo, hi, _ := pairedNs(cfg)
	side, err := startSide(ctx, cfg, env, objs, tmp, lo)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		res.SideErr = err.Error()
		logf(cfg, "side-by-side phase not measured: %v", err)
		return nil
	}
	defer side.close(cfg)
	if err := checkSeparate(live, side, objs); err != nil {
		res.SideErr = err.Error()
		logf(cfg, "side-by-side phase not measured: %v", err)
		return nil
	}
	paths := map[bool]map[string]clientPath{false: sidePaths(side, objs.side), true: {}}
	for _, p := range clientPaths(live, objs, hi) {
		paths[true][p.name] = p
	}
	count := map[bool]int{false: lo, true: hi}
	tcp := tcpReader{cfg: cfg, nss: namespaces(append(slices.Clone(live), side))}
	load1 := procstat.LoadAvg()
	logf(cfg, "side by side: N=%d and N=%d, %d repetitions", lo, hi, cfg.Data.PairedReps)
	for rep := 1; rep <= cfg.Data.PairedReps; rep++ {
		for _, w := range cfg.Data.Workers {
			for _, st := range rounds.Paired(rep, pathTC, pathSock) {
				for _, l := range st.Runs {
					p, ok := paths[st.Hi][l.Item]
					if !ok {
						continue
					}
					pt, err := runPoint(ctx, p, loadKind{loadgen.KindConn, w, cfg.Data.Window / 2}, cfg.Data.Warmup, cfg.Data.Pool, &tcp)
					if err != nil {
						return err
					}
					pt.Kind, pt.N, pt.Rep, pt.Leg, pt.Load1 = kindPaired, count[st.Hi], rep, l.Leg, load1
					res.Data = append(res.Data, *pt)
					logPoint(cfg, pt)
				}
			}
		}
	}
	return nil
}

// startSide brings up the second fastpath node serving the n side
// Services, and pauses its agent once they answer, as the contenders'.
func startSide(ctx context.Context, cfg config, env *testenv.Env, objs *objects, tmp string, n int) (*running, error) {
	tag := fmt.Sprintf("fps%d", n)
	dir := filepath.Join(tmp, tag)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	nd, err := newNode(env, tag, sideLinkNo, dir, true)
	if err != nil {
		return nil, err
	}
	kubeconfig, err := writeKubeconfig(nd, env)
	if err != nil {
		_ = nd.close()
		return nil, err
	}
	a, err := startAgent(nd, cfg.AgentBin, kubeconfig, "--service-proxy-name", sideProxyName)
	if err != nil {
		_ = nd.close()
		return nil, err
	}
	l := &running{name: "fastpath (side)", n: n, nd: nd, p: a}
	r := &result{}
	if err := coldStart(ctx, a, nd, sample(objs.side, n), n, r); err != nil {
		err = fmt.Errorf("second fastpath node: %w\n%s", err, a.proc().Tail(20))
		l.close(cfg)
		return nil, err
	}
	if err := a.proc().Pause(); err != nil {
		l.close(cfg)
		return nil, err
	}
	logf(cfg, "side-by-side: second fastpath node serves its %d Services (cold start %s)", n, ms(r.ColdStart))
	return l, nil
}

// checkSeparate makes sure each node serves only its own Services: a side
// Service through a contender's node, or one of the N through the side
// node, would mean the counts compared are not what they say.
func checkSeparate(live []*running, side *running, objs *objects) error {
	for _, l := range live {
		if name, err := l.nd.prober.ask(objs.side[0]); err == nil && name != "" {
			return fmt.Errorf("%s's node answers the side Service %s (%s): it does not skip labelled Services", l.name, sideName(0), objs.side[0])
		}
	}
	if name, err := side.nd.prober.ask(objs.vips[0]); err == nil && name != "" {
		return fmt.Errorf("the side node answers %s (%s): its agent does not keep to --service-proxy-name", svcName(0), objs.vips[0])
	}
	return nil
}

// sidePaths are the second node's TC and socket-LB paths to its Services.
func sidePaths(side *running, vips []netip.Addr) map[string]clientPath {
	targets := make([]string, len(vips))
	for i, v := range vips {
		targets[i] = netip.AddrPortFrom(v, svcPort).String()
	}
	return map[string]clientPath{
		pathTC:   {name: pathTC, netns: side.nd.star.Host("client").NS.Path(), targets: targets},
		pathSock: {name: pathSock, netns: side.nd.star.Node.Path(), cgroup: side.nd.cgroup, targets: targets},
	}
}
