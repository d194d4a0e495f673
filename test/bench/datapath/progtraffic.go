package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/fastpath-net/fastpath/test/bench/internal/loadgen"
	"github.com/fastpath-net/fastpath/test/bench/internal/rounds"
)

// progTraffic is what the node's fp_tc_lb instances spent, as the kernel
// times them, while one mode's new-connection runs carried real traffic:
// BPF_PROG_TEST_RUN (progcost.go) times the program on crafted frames with
// warm caches; here the same program sees the conntrack occupancy, cache
// misses and packet mix of the traffic runs.
type progTraffic struct {
	Runs uint64        // program invocations over the mode's runs
	Time time.Duration // their summed run time
	Ops  uint64        // connections the runs completed
}

func (t *progTraffic) add(u progTraffic) {
	t.Runs, t.Time, t.Ops = t.Runs+u.Runs, t.Time+u.Time, t.Ops+u.Ops
}

// inTraffic is one worker count's in-traffic time of tc and its baseline.
type inTraffic struct {
	Workers    int
	Direct, TC progTraffic
}

// PerPacket and PerConn are 0 without runs or connections.
func (t progTraffic) PerPacket() float64 { return per(float64(t.Time.Nanoseconds()), float64(t.Runs)) }
func (t progTraffic) PerConn() float64   { return per(float64(t.Time.Nanoseconds()), float64(t.Ops)) }
func (t progTraffic) Packets() float64   { return per(float64(t.Runs), float64(t.Ops)) }

func per(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// progTrafficBlocks is how many ABBA blocks of tc and direct the
// measurement runs per worker count (at most -reps): two let each mode lead
// a block once.
const progTrafficBlocks = 2

// measureProgTraffic runs tc and its baseline direct once more, after the
// measured repetitions of n (so with the conntrack those left), in ABBA
// blocks per worker count, with the kernel's BPF run-time statistics on
// (BPF_ENABLE_STATS) for these runs only: the statistics time every BPF
// program on the machine while on, so the repetitions whose rates the
// report compares run without them. Runs have no warm-up, so the
// statistics read before and after a run cover exactly its traffic.
func measureProgTraffic(ctx context.Context, cfg config, env *benchEnv, agent *agentProc, ctr *counterReader,
	n int, targets map[bool][]string) ([]inTraffic, error) {
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return nil, fmt.Errorf("BPF run-time statistics: %w", err)
	}
	defer stats.Close()
	progs, err := env.tcxPrograms()
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, p := range progs {
			p.Close()
		}
	}()
	tc := modeByName("tc")
	base := modeByName(tc.Base)
	var out []inTraffic
	for _, w := range cfg.Workers {
		row := inTraffic{Workers: w}
		for rep := 1; rep <= min(cfg.Reps, progTrafficBlocks); rep++ {
			for _, r := range rounds.ABBA(rep, base, tc) {
				t, err := progTrafficRun(ctx, cfg, env, agent, ctr, n, r.Item, w, rep, targets[r.Item.VIP], progs)
				if err != nil {
					return nil, err
				}
				if r.Item.Name == tc.Name {
					row.TC.add(t)
				} else {
					row.Direct.add(t)
				}
			}
		}
		out = append(out, row)
	}
	return out, nil
}

// progTrafficRun runs mode m once, half a window as a leg of the
// repetitions does, and reads what progs spent meanwhile.
func progTrafficRun(ctx context.Context, cfg config, env *benchEnv, agent *agentProc, ctr *counterReader,
	n int, m modeSpec, w, rep int, targets []string, progs []*ebpf.Program) (progTraffic, error) {
	var t progTraffic
	runs0, time0, err := progRunTotals(progs)
	if err != nil {
		return t, err
	}
	p, err := runPoint(ctx, cfg, env, agent, ctr, n, m, loadgen.KindConn, w, rep, targets, cfg.Duration/2, 0)
	if err != nil {
		return t, err
	}
	if p.Err != "" {
		return t, fmt.Errorf("%s with %d workers: %s", m.Name, w, p.Err)
	}
	runs1, time1, err := progRunTotals(progs)
	if err != nil {
		return t, err
	}
	t.Runs, t.Time, t.Ops = runs1-runs0, time1-time0, p.Ops
	logf(cfg, "N=%-6d %-11s in-traffic program time w=%d rep %d: %.1f packets and %.2f µs per connection (%.0f ns per packet)",
		n, m.Name, w, rep, t.Packets(), t.PerConn()/1e3, t.PerPacket())
	return t, nil
}

func progRunTotals(progs []*ebpf.Program) (runs uint64, total time.Duration, err error) {
	for _, p := range progs {
		s, err := p.Stats()
		if err != nil {
			return 0, 0, fmt.Errorf("program statistics: %w", err)
		}
		runs, total = runs+s.RunCount, total+s.Runtime
	}
	return runs, total, nil
}

// tcxPrograms opens the programs attached at TCX ingress of the node's
// interfaces, each once (one instance serves every interface of a role):
// the agent's fp_tc_lb instances, and no other program on the machine,
// whoever else runs one of that name.
func (e *benchEnv) tcxPrograms() ([]*ebpf.Program, error) {
	var progs []*ebpf.Program
	seen := map[ebpf.ProgramID]bool{}
	err := e.eachNodeIface(func(l netlink.Link, tcx []link.AttachedProgram) error {
		for _, ap := range tcx {
			if seen[ap.ID] {
				continue
			}
			seen[ap.ID] = true
			p, err := ebpf.NewProgramFromID(ap.ID)
			if err != nil {
				return fmt.Errorf("program %d on %s: %w", ap.ID, l.Attrs().Name, err)
			}
			progs = append(progs, p)
		}
		return nil
	})
	if err == nil && len(progs) == 0 {
		err = errors.New("no program at TCX ingress of the node's interfaces")
	}
	if err != nil {
		for _, p := range progs {
			p.Close()
		}
		return nil, err
	}
	return progs, nil
}

// progTrafficSection writes the in-traffic table of the report.
func progTrafficSection(p func(string, ...any), res *results) {
	if len(res.PerN) == 0 {
		return
	}
	p("## fp_tc_lb in traffic\n\n")
	p("The same program as above, timed by the kernel (BPF_ENABLE_STATS: summed run time of the agent's fp_tc_lb instances at TCX ingress of the node's interfaces) ")
	p("while real connections run, after the measured repetitions of each N (so with the conntrack entries they left, *ct entries*), ")
	p("in %d ABBA blocks of tc and direct per worker count, each run half a window with no warm-up; the statistics are on for these runs only. ", progTrafficBlocks)
	p("*packets*: program runs per completed connection (each packet crosses one node interface's ingress); *per packet*, *per connection*: run time over runs and over connections. ")
	p("The direct mode's packets all take the no-service path. The program's work on a tc packet includes making a cloned packet writable, ")
	p("which on the direct path the kernel's forwarding does instead (outside the program): tc − direct overstates the program's share by that copy.\n\n")
	p("| N | workers | ct entries | direct: packets | per packet | per connection | tc: packets | per packet | per connection | tc − direct per connection |\n")
	p("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, nr := range res.PerN {
		if nr.InTrafficErr != "" {
			p("| %s | – | – | not measured: %s | | | | | | |\n", fmtInt(nr.N), nr.InTrafficErr)
			continue
		}
		for _, row := range nr.InTraffic {
			d, t := row.Direct, row.TC
			p("| %s | %d | %s | %.1f | %.0f ns | %.2f µs | %.1f | %.0f ns | %.2f µs | %+.2f µs |\n",
				fmtInt(nr.N), row.Workers, fmtInt(nr.CTEntries), d.Packets(), d.PerPacket(), d.PerConn()/1e3,
				t.Packets(), t.PerPacket(), t.PerConn()/1e3, (t.PerConn()-d.PerConn())/1e3)
		}
	}
	p("\n")
}
