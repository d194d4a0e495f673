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
// as the number of services. Here two nodes serve the two counts at once,
// each its own topology and agent (as the headline's second fastpath node
// does), and each load balancer runs two legs on each in turn, in an order
// whose mean time is the same for both counts (rounds.Paired), so a drift
// linear over the repetition cancels from the ratio. The nodes swap counts
// half-way, so a difference between them cancels too (benchPaired).
//
// This phase first had one agent switch its services file between the
// counts before their legs. That measured the switch along with the count:
// inserting and deleting 49,999 services every few seconds slowed the whole
// machine for the legs after it (the client's CPU per connection 20 %
// higher than in a run switching between N=1 and N=2, at N=1 as well; the
// server slower too), which a node that keeps its services does not pay.

// kindPaired marks the new-connection points of this phase, so they never
// mix with the per-N blocks' (loadgen.KindConn).
const kindPaired = "conn-paired"

// pairedNs are the two service counts the phase compares, or false when
// the run has no N=1 and larger N to compare.
func pairedNs(ns []int) (lo, hi int, ok bool) {
	lo, hi = slices.Min(ns), slices.Max(ns)
	return lo, hi, lo == 1 && hi > lo
}

// pairedNode is where one count's legs run: a topology, an agent on it,
// the count the legs are reported at and the VIPs they send to.
type pairedNode struct {
	env     *benchEnv
	agent   *agentProc
	pin     string
	ctr     *counterReader
	n       int
	targets []string
}

// startNode starts an agent on env serving serve services under the pin
// directory name, and waits until its maps hold them.
func startNode(ctx context.Context, env *benchEnv, bin, name string, serve int) (pn *pairedNode, err error) {
	live := filepath.Join(env.tmp, name+".yaml")
	if _, err := writeServices(live, serve, env.backends); err != nil {
		return nil, err
	}
	pn = &pairedNode{env: env, pin: filepath.Join(env.pinRoot, name), n: serve, targets: vipTargets(serve)}
	if pn.agent, err = env.startAgent(bin, pn.pin, live); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_, stopErr := pn.stop()
			err = errors.Join(err, stopErr)
		}
	}()
	if _, _, err = pn.agent.waitProgrammed(ctx, serve, len(backendsOf(env.backends, serve, 0)), time.Minute+time.Duration(serve)*time.Millisecond); err != nil {
		return nil, err
	}
	if pn.ctr, err = openCounters(pn.pin); err != nil {
		return nil, err
	}
	return pn, nil
}

// stop ends the node's agent and removes what it attached, returning the
// agent's warnings.
func (pn *pairedNode) stop() ([]string, error) {
	if pn.ctr != nil {
		pn.ctr.close()
	}
	warns := pn.agent.warnings()
	return warns, errors.Join(pn.agent.stop(), pn.env.detach(pn.pin))
}

// distinct are the nodes of the map with an agent each (with -paired-hot,
// both counts' nodes share one).
func distinct(node map[bool]*pairedNode) []*pairedNode {
	var out []*pairedNode
	for _, hi := range []bool{true, false} {
		if pn := node[hi]; pn != nil && (len(out) == 0 || out[0].agent != pn.agent) {
			out = append(out, pn)
		}
	}
	return out
}

// benchPaired runs the phase and returns its points and its agents'
// warnings. The two counts run on two environments, env and a second one
// like it, and swap them half-way (pairedHalves): env has run the per-N
// blocks and the second is fresh, and in a run with N=1 and N=2 without
// the swap, env (serving N=2) was 2-3 % slower, so each count spends half
// the repetitions on each. With -paired-hot there is one node, env.
func benchPaired(ctx context.Context, cfg config, env *benchEnv, bin string) (pts []point, warns []string, err error) {
	lo, hi, ok := pairedNs(cfg.Ns)
	if !ok {
		return nil, nil, nil
	}
	envs := []*benchEnv{env}
	if !cfg.PairedHot {
		env2, err := newEnv(cfg.Log, env.id+"s")
		if err != nil {
			return nil, nil, fmt.Errorf("second node: %w", err)
		}
		env2.agentArgs = env.agentArgs
		defer func() { err = errors.Join(err, env2.close()) }()
		envs = append(envs, env2)
	}
	for half, reps := range pairedHalves(cfg.PairedReps, len(envs)) {
		if len(reps) == 0 {
			continue
		}
		if half > 0 {
			// New agents, new conntrack: the backends' TIME_WAIT of the
			// first half would meet flows without their tombstones.
			logf(cfg, "paired: swapping the nodes; waiting %s for the backends' TIME_WAIT to expire", cfg.SwapWait)
			if err := pause(ctx, cfg.SwapWait); err != nil {
				return nil, nil, err
			}
		}
		p, w, err := pairedHalf(ctx, cfg, envs[half], envs[(half+1)%len(envs)], bin, lo, hi, reps)
		pts, warns = append(pts, p...), append(warns, w...)
		if err != nil {
			return nil, nil, err
		}
	}
	return pts, warns, nil
}

// pairedHalves splits repetitions 1..reps into one run per environment,
// the first getting the odd one out.
func pairedHalves(reps, envs int) [][]int {
	out := make([][]int, envs)
	for r := 1; r <= reps; r++ {
		i := min((r-1)*envs/reps, envs-1)
		out[i] = append(out[i], r)
	}
	return out
}

// pairedHalf runs repetitions reps with the large count's node on big and
// the small count's on small.
func pairedHalf(ctx context.Context, cfg config, big, small *benchEnv, bin string, lo, hi int, reps []int) (pts []point, warns []string, err error) {
	node, err := pairedNodes(ctx, cfg, big, small, bin, lo, hi)
	defer func() {
		for _, pn := range distinct(node) {
			w, stopErr := pn.stop()
			warns = append(warns, w...)
			err = errors.Join(err, stopErr)
		}
	}()
	if err != nil {
		return nil, nil, err
	}
	for _, rep := range reps {
		for _, w := range cfg.Workers {
			for _, st := range rounds.Paired(rep, modeByName("tc"), modeByName("sock")) {
				pn := node[st.Hi]
				for _, l := range st.Runs {
					p, err := measurePoint(ctx, cfg, pn.env, pn.agent, pn.ctr, pn.n, l.Item, loadgen.KindConn, w, rep, pn.targets, cfg.Duration/2)
					if err != nil {
						return nil, nil, err
					}
					p.Kind, p.Leg = kindPaired, l.Leg
					pts = append(pts, *p)
				}
			}
		}
	}
	return pts, nil, nil
}

// pairedNodes starts the nodes of a half, keyed by "is the large count".
// With -paired-hot, one agent on big serves the large count to both, and
// the small count's legs send to one service per backend among them, hot
// in the caches: only how widely the lookups spread differs. Nodes
// started before an error are in the map, to be stopped.
func pairedNodes(ctx context.Context, cfg config, big, small *benchEnv, bin string, lo, hi int) (map[bool]*pairedNode, error) {
	node := map[bool]*pairedNode{}
	var err error
	if node[true], err = startNode(ctx, big, bin, "paired", hi); err != nil {
		delete(node, true)
		return node, err
	}
	if cfg.PairedHot {
		hot := *node[true]
		hot.n, hot.targets = lo, vipTargets(min(hi, len(big.backends)))
		node[false] = &hot
		return node, nil
	}
	if node[false], err = startNode(ctx, small, bin, "paired", lo); err != nil {
		delete(node, false)
	}
	return node, err
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
		p("Here two nodes serve the two counts at once, each a copy of the topology above (clients, node, backends, servers) with an agent of its own, one serving N=%s and the other N=%s; half-way they swap (new agents, after the backends' TIME_WAIT), so each count runs half its repetitions on each node; ", fmtInt(lo), fmtInt(hi))
	}
	p("and for each worker count each load balancer runs two legs of %s at each count, in the order N=%s (tc, sock), N=%s (tc, sock, sock, tc), N=%s (sock, tc), mirrored in every other repetition, ", res.Cfg.Duration/2, fmtInt(lo), fmtInt(hi), fmtInt(lo))
	p("so each mode's legs at one count have the same mean time as at the other. ")
	if res.Cfg.PairedHot {
		p("Both counts share the conntrack and the flows in it. ")
	} else {
		p("Neither node's maps change during the phase. ")
	}
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
