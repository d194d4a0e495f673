package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"time"

	"github.com/fastpath-net/fastpath/test/bench/internal/loadgen"
	"github.com/fastpath-net/fastpath/test/bench/internal/rounds"
)

// The budget's "rate at the largest N vs N=1", measured side by side.
//
// The per-N blocks run minutes apart, each with a fresh agent, and on this
// machine the direct path itself, which has no Service, moved between them
// by as much as the budget allows fastpath to (83 to 110 % of its N=1 rate
// in one run): a ratio of two blocks measures the machine's drift as much
// as the number of services. Here one agent serves both counts in turn
// within every repetition. Its services file switches between N=1 and the
// largest N, and each load balancer runs two legs at each count, in an
// order whose mean time is the same for both counts (rounds.Paired), so a
// drift linear over the repetition cancels from the ratio. Both counts
// share the agent's conntrack and so the flows it holds: the number of
// services is the only difference.

// kindPaired marks the new-connection points of this phase, so they never
// mix with the per-N blocks' (loadgen.KindConn).
const kindPaired = "conn-paired"

// pairedNs are the two service counts the phase compares, or false when
// the run has no N=1 and larger N to compare.
func pairedNs(ns []int) (lo, hi int, ok bool) {
	lo, hi = slices.Min(ns), slices.Max(ns)
	return lo, hi, lo == 1 && hi > lo
}

// benchPaired runs the phase with a fresh agent and returns its points.
func benchPaired(ctx context.Context, cfg config, env *benchEnv, bin string) (pts []point, err error) {
	lo, hi, ok := pairedNs(cfg.Ns)
	if !ok {
		return nil, nil
	}
	count := map[bool]int{false: lo, true: hi}
	targets := map[bool][]string{false: vipTargets(lo), true: vipTargets(hi)}
	serve := lo
	if cfg.PairedHot {
		// The maps hold hi services at both counts; the small count's
		// legs send to one service per backend, hot in the caches.
		serve, targets[false] = hi, vipTargets(min(hi, len(env.backends)))
	}
	live := filepath.Join(env.tmp, "paired.yaml")
	if _, err := writeServices(live, serve, env.backends); err != nil {
		return nil, err
	}
	pin := filepath.Join(env.pinRoot, "paired")
	agent, err := env.startAgent(bin, pin, live)
	if err != nil {
		return nil, err
	}
	defer func() {
		err = errors.Join(err, agent.stop(), env.detach(pin))
	}()
	if _, _, err := agent.waitProgrammed(ctx, serve, len(backendsOf(env.backends, serve, 0)), time.Minute+time.Duration(serve)*time.Millisecond); err != nil {
		return nil, err
	}
	ctr, err := openCounters(pin)
	if err != nil {
		return nil, err
	}
	defer ctr.close()
	atHi := false
	for rep := 1; rep <= cfg.PairedReps; rep++ {
		for _, w := range cfg.Workers {
			for _, st := range rounds.Paired(rep, modeByName("tc"), modeByName("sock")) {
				n := count[st.Hi]
				if st.Hi != atHi && !cfg.PairedHot {
					if err := switchServices(ctx, cfg, env, agent, live, n); err != nil {
						return nil, err
					}
				}
				atHi = st.Hi
				for _, l := range st.Runs {
					p, err := measurePoint(ctx, cfg, env, agent, ctr, n, l.Item, loadgen.KindConn, w, rep, targets[st.Hi], cfg.Duration/2)
					if err != nil {
						return nil, err
					}
					p.Kind, p.Leg = kindPaired, l.Leg
					pts = append(pts, *p)
				}
			}
		}
	}
	return pts, nil
}

// switchServices rewrites the agent's services file (live) with n services
// and waits until the maps hold them, and a second more for the agent's own
// work after an update (returning memory to the OS) to end.
func switchServices(ctx context.Context, cfg config, env *benchEnv, agent *agentProc, live string, n int) error {
	t := time.Now()
	if _, err := writeServices(live, n, env.backends); err != nil {
		return err
	}
	per := len(backendsOf(env.backends, n, 0))
	if err := agent.waitFrontends(ctx, n, per, t.Add(time.Minute+time.Duration(n)*time.Millisecond)); err != nil {
		return fmt.Errorf("switch to %d services after %s: %w", n, time.Since(t).Round(time.Millisecond), err)
	}
	logf(cfg, "paired: switched to %d services in %s", n, time.Since(t).Round(time.Millisecond))
	return pause(ctx, time.Second)
}

// pairedSection reports the phase: each load balancer's rate at both
// counts and their ratio, repetition by repetition.
func pairedSection(p func(string, ...any), res *results, ag map[aggKey]*agg) {
	lo, hi, ok := pairedNs(res.Cfg.Ns)
	if !ok {
		return
	}
	p("## N=%s and N=%s side by side\n\n", fmtInt(lo), fmtInt(hi))
	if res.PairedErr != "" {
		p("Not measured: %s\n\n", res.PairedErr)
		return
	}
	p("The per-N blocks above run minutes apart, each with a fresh agent, and the machine drifts between them: compare the direct baselines' *vs N=1*. ")
	if res.Cfg.PairedHot {
		p("**Diagnostic run (-paired-hot)**: the agent serves N=%s throughout, and the N=%s legs send to the first of those services, one per backend, so only how widely the lookups spread differs between the counts; ", fmtInt(hi), fmtInt(lo))
	} else {
		p("Here one agent serves both counts in turn within every repetition: its services file switches between N=%s and N=%s (the agent applies the difference; the harness waits until the maps hold it, then 1 s more), ", fmtInt(lo), fmtInt(hi))
	}
	p("and for each worker count each load balancer runs two legs of %s at each count, in the order N=%s (tc, sock), N=%s (tc, sock, sock, tc), N=%s (sock, tc), mirrored in every other repetition, ", res.Cfg.Duration/2, fmtInt(lo), fmtInt(hi), fmtInt(lo))
	p("so each mode's legs at one count have the same mean time as at the other. Both counts share the conntrack and the flows in it. ")
	p("*vs N=%s*: a repetition's rate at N=%s (its two legs pooled) / its rate at N=%s; median, and range in parentheses. This is the budget's ratio.\n\n", fmtInt(lo), fmtInt(hi), fmtInt(lo))
	p("| mode | workers | conn/s at N=%s | conn/s at N=%s | vs N=%s | errors |\n|---|---:|---:|---:|---:|---:|\n", fmtInt(lo), fmtInt(hi), fmtInt(lo))
	for _, m := range modes {
		if m.Base == "" {
			continue
		}
		for _, w := range res.Cfg.Workers {
			a, b := ag[aggKey{lo, m.Name, kindPaired, w}], ag[aggKey{hi, m.Name, kindPaired, w}]
			if a == nil || b == nil {
				continue
			}
			r := rounds.Ratio(perRepOf(res.Points, kindPaired, hi, m.Name, w), perRepOf(res.Points, kindPaired, lo, m.Name, w))
			p("| %s | %d | %s | %s | %s | %d |\n", m.Name, w, fmtInt(int(math.Round(a.Rate))), fmtInt(int(math.Round(b.Rate))), r.Percent(), a.Errors+b.Errors+a.Drops+b.Drops)
		}
	}
	p("\n")
}
