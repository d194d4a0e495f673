package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"time"

	"github.com/cilium/ebpf"

	"github.com/fastpath-net/fastpath/internal/datapath"
	"github.com/fastpath-net/fastpath/internal/datapath/ctmap"
	"github.com/fastpath-net/fastpath/internal/datapath/pkttest"
	"github.com/fastpath-net/fastpath/test/bench/internal/loadgen"
	"github.com/fastpath-net/fastpath/test/bench/internal/netstat"
)

// progKind is one kind of packet whose cost in fp_tc_lb alone is measured,
// and the datapath counter each of its runs must move (none: no counter
// may move), so a frame that takes another path than the one it is named
// for fails the run instead of measuring the wrong thing.
type progKind struct {
	Name, What, Counter string
}

var progKinds = []progKind{
	{"new flow", "SYN from a new client tuple to a random VIP: both ct lookups miss, service lookup, slot pick, backend, both ct entries written, DNAT", "forward_new"},
	{"established", "ACK client -> VIP of one of those flows, in random order: ct REPLY miss, FORWARD hit, DNAT", "forward_ct"},
	{"reply", "ACK backend -> client of one of those flows, in random order: ct REPLY hit, source back to the VIP the entry holds", "reply_revnat"},
	{"no service", "ACK client -> a backend's own address:port, what every packet of `direct` pays: both ct lookups and the service lookups miss, passed untouched", ""},
}

// progCost is fp_tc_lb's cost per packet kind with N services programmed.
type progCost struct {
	N int
	// Kinds[k] are the kernel's durations of progKinds[k], one
	// BPF_PROG_TEST_RUN with repeat 1 each.
	Kinds []opStats
	// Repeated are the mean durations the kernel reports for "no service"
	// frames run progRepeat times in one call: the same work without the
	// kernel's per-call timing, so Kinds[no service] minus these is what one
	// call adds to every kind.
	Repeated opStats
}

// progRepeat is the repeat count of the calls behind progCost.Repeated.
const progRepeat = 200

// benchProgCost loads the datapath on its own pin directory (no agent, no
// attachment) and, for each N of ns in turn, programs N services through a
// Table and a Reconciler into the real maps (the same services the agent
// gets), then runs the internal-role fp_tc_lb (the instance on the node's
// client-facing veths in the traffic runs) with BPF_PROG_TEST_RUN on runs
// frames of each kind. A run's frame is rewritten in place and the kernel
// does not restore it between repetitions, so only frames that pass
// untouched can be repeated; every other kind is timed one call per frame,
// a fresh tuple for each new flow.
func benchProgCost(ctx context.Context, pinDir string, ns []int, runs int, backends []netip.AddrPort) ([]progCost, error) {
	dp, table, rec, err := loadUnattached(pinDir)
	if err != nil {
		return nil, err
	}
	defer dp.Close()
	ctr := &counterReader{m: dp.Metrics} // not closed: dp owns the map
	prog := dp.TCProgramFor(datapath.RoleInternal)
	var out []progCost
	have := 0
	for _, n := range ns {
		for ; have < n; have++ {
			if err := table.Upsert(benchService(have, backendOf(backends, have))); err != nil {
				return nil, err
			}
		}
		if err := rec.Sync(table); err != nil {
			return nil, fmt.Errorf("sync of %d services: %w", n, err)
		}
		// Each N starts from an empty conntrack, like a fresh agent.
		if err := clearCT(dp); err != nil {
			return nil, err
		}
		pc, err := progCostAt(ctx, prog, ctr, n, runs, backends)
		if err != nil {
			return nil, fmt.Errorf("at %d services: %w", n, err)
		}
		out = append(out, *pc)
	}
	return out, nil
}

// clearCT empties the conntrack map.
func clearCT(dp *datapath.Datapath) error {
	all, err := dp.CT.All()
	if err != nil {
		return err
	}
	keys := make([]ctmap.Key, 0, len(all))
	for k := range all {
		keys = append(keys, k)
	}
	return dp.CT.Delete(keys)
}

// progCostAt measures every kind with n services in the maps.
func progCostAt(ctx context.Context, prog *ebpf.Program, ctr *counterReader, n, runs int, backends []netip.AddrPort) (*progCost, error) {
	rng := rand.New(rand.NewPCG(uint64(n), 3))
	// Flow i: a client address of its own (so no tuple at a backend is
	// another flow's) to service svc[i].
	svc := make([]int, runs)
	for i := range svc {
		svc[i] = rng.IntN(n)
	}
	client := func(i int, port uint16) netip.AddrPort {
		v := uint32(100)<<24 | uint32(64)<<16 + uint32(i) // 100.64.0.0/10: in no namespace of the run
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), port)
	}
	toVIP := func(i int) pkttest.Flow {
		return pkttest.Flow{Src: client(i, 40000), Dst: netip.AddrPortFrom(vipOf(svc[i]), vipPort)}
	}
	frames := []func(i int) []byte{
		func(i int) []byte { return pkttest.TCPFrame(toVIP(i), pkttest.SYN, nil) },
		func(i int) []byte { return pkttest.TCPFrame(toVIP(i), pkttest.ACK, nil) },
		func(i int) []byte {
			f := pkttest.Flow{Src: backendOf(backends, svc[i]), Dst: client(i, 40000)}
			return pkttest.TCPFrame(f, pkttest.ACK, nil)
		},
		func(i int) []byte {
			// Another port than the flow's: no tuple the flows hold.
			f := pkttest.Flow{Src: client(i, 50000), Dst: backendOf(backends, svc[i])}
			return pkttest.TCPFrame(f, pkttest.ACK, nil)
		},
	}
	pc := &progCost{N: n, Kinds: make([]opStats, len(progKinds))}
	for k, kind := range progKinds {
		order := rng.Perm(runs)
		if k == 0 {
			// New flows in order: flow i is created before its later packets.
			for i := range order {
				order[i] = i
			}
		}
		before, err := ctr.read()
		if err != nil {
			return nil, err
		}
		st := &pc.Kinds[k]
		st.Name, st.What, st.Samples = kind.Name, kind.What, make([]time.Duration, 0, runs)
		for _, i := range order {
			if len(st.Samples)%1024 == 0 && ctx.Err() != nil {
				return nil, ctx.Err()
			}
			d, err := runPassed(prog, frames[k](i), 1)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", kind.Name, err)
			}
			st.Samples = append(st.Samples, d)
		}
		if err := wantCounted(ctr, before, kind.Counter, uint64(runs)); err != nil {
			return nil, fmt.Errorf("%s: %w", kind.Name, err)
		}
	}
	// The untouched kind again, repeated within one call.
	before, err := ctr.read()
	if err != nil {
		return nil, err
	}
	pc.Repeated.Name = fmt.Sprintf("no service ×%d", progRepeat)
	pc.Repeated.What = fmt.Sprintf("the no-service frame run %d times in one call: the kernel's mean", progRepeat)
	calls := max(1, runs/progRepeat)
	for j := 0; j < calls; j++ {
		d, err := runPassed(prog, frames[len(frames)-1](rng.IntN(runs)), progRepeat)
		if err != nil {
			return nil, fmt.Errorf("no service, repeated: %w", err)
		}
		pc.Repeated.Samples = append(pc.Repeated.Samples, d)
	}
	if err := wantCounted(ctr, before, "", 0); err != nil {
		return nil, fmt.Errorf("no service, repeated: %w", err)
	}
	return pc, nil
}

// runPassed runs frame repeat times and returns the kernel's mean duration;
// the program must pass the frame on (TCX_NEXT), as it does every frame of
// the kinds measured.
func runPassed(prog *ebpf.Program, frame []byte, repeat int) (time.Duration, error) {
	ret, d, err := prog.Benchmark(frame, repeat, nil)
	if err != nil {
		return 0, err
	}
	if ret != tcxNext {
		return 0, fmt.Errorf("verdict %d, want TCX_NEXT (pass)", int32(ret))
	}
	return d, nil
}

// tcxNext is TCX_NEXT (-1) as BPF_PROG_TEST_RUN's u32 return value.
const tcxNext = 0xffffffff

// wantCounted fails unless, since before, counter moved by exactly want and
// no other counter moved (counter "": none may move).
func wantCounted(ctr *counterReader, before map[string]uint64, counter string, want uint64) error {
	after, err := ctr.read()
	if err != nil {
		return err
	}
	for name, v := range netstat.Diff(after, before) {
		exp := uint64(0)
		if name == counter {
			exp = want
		}
		if v != exp {
			return fmt.Errorf("datapath counter %s moved by %d, want %d: the frames took another path", name, v, exp)
		}
	}
	if _, ok := after[counter]; counter != "" && !ok {
		return fmt.Errorf("no datapath counter %s", counter)
	}
	return nil
}

// perConn is what the counters of the tc new-connection runs at n say one
// connection sends through fp_tc_lb besides its first packet: fwd later
// packets client -> backend, rev packets backend -> client. ok is false
// without such runs.
func perConn(pts []point, n int) (fwd, rev float64, ok bool) {
	var flows, ct, rn uint64
	for _, p := range pts {
		if p.N == n && p.Mode == "tc" && p.Kind == loadgen.KindConn && p.Err == "" {
			flows, ct, rn = flows+p.ForwardNew, ct+p.ForwardCT, rn+p.ReplyRevNat
		}
	}
	if flows == 0 {
		return 0, 0, false
	}
	return float64(ct) / float64(flows), float64(rn) / float64(flows), true
}

// progCostSection writes the per-packet table of the report.
func progCostSection(p func(string, ...any), res *results) {
	if len(res.ProgCost) == 0 {
		return
	}
	runs := len(res.ProgCost[0].Kinds[0].Samples)
	p("## fp_tc_lb per packet\n\n")
	p("The internal-role `fp_tc_lb` (the instance on the node's veths above) run with BPF_PROG_TEST_RUN on crafted frames, in a datapath loaded on its own pin directory ")
	p("with the N services of the traffic runs programmed through `loadbalancer.Table` and `Reconciler` into the real maps (default sizes; conntrack emptied for each N). ")
	p("ns per packet as the kernel times the program: median of %s calls with repeat 1 (mean in parentheses). ", fmtInt(runs))
	p("A frame the program rewrites cannot be repeated within a call (the kernel runs the next repetition on the rewritten frame), so every kind is timed one call per frame, ")
	p("and each call's timing adds the same constant: *%s* runs the untouched no-service frame %d times in one call (the kernel's mean), the program without that constant. ", res.ProgCost[0].Repeated.Name, progRepeat)
	p("*tc − direct per connection*: new flow + f × established + r × reply − (1 + f + r) × no service, where f and r are the packets one connection of the tc new-connection runs sent each way after its SYN ")
	p("(datapath counters forward_ct and reply_revnat over forward_new; the direct mode's connections send as many, all through the no-service path); ")
	p("next to it the difference of the two modes' p50 connection latency with 1 worker, which it would explain if the program were the cause.\n\n")
	p("| N |")
	for _, k := range res.ProgCost[0].Kinds {
		p(" %s |", k.Name)
	}
	p(" %s | f / r | tc − direct per connection | Δp50 tc − direct, 1 worker |\n|---:|", res.ProgCost[0].Repeated.Name)
	p("%s\n", strings.Repeat("---:|", len(res.ProgCost[0].Kinds)+4))
	ag := aggregate(res.Points, res.Cfg)
	for _, pc := range res.ProgCost {
		p("| %s |", fmtInt(pc.N))
		for _, k := range pc.Kinds {
			p(" %.0f (%.0f) |", nanos(k.quantile(0.5)), nanos(k.mean()))
		}
		p(" %.0f (%.0f) |", nanos(pc.Repeated.quantile(0.5)), nanos(pc.Repeated.mean()))
		med := func(i int) float64 { return nanos(pc.Kinds[i].quantile(0.5)) }
		fwd, rev, ok := perConn(res.Points, pc.N)
		if ok {
			extra := med(0) + fwd*med(1) + rev*med(2) - (1+fwd+rev)*med(3)
			p(" %.1f / %.1f | %+.2f µs |", fwd, rev, extra/1e3)
		} else {
			p(" – | – |")
		}
		tc, direct := ag[aggKey{pc.N, "tc", loadgen.KindConn, 1}], ag[aggKey{pc.N, "direct", loadgen.KindConn, 1}]
		if tc != nil && direct != nil {
			p(" %+.1f µs |\n", tc.P50-direct.P50)
		} else {
			p(" – |\n")
		}
	}
	p("\n")
	for _, k := range res.ProgCost[0].Kinds {
		p("- *%s*: %s\n", k.Name, k.What)
	}
	p("\n")
}
