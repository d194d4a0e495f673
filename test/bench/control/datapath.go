package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/fastpath-net/fastpath/internal/ctl"
	"github.com/fastpath-net/fastpath/internal/datapath/ctmap"
	"github.com/fastpath-net/fastpath/internal/nettopo"
	"github.com/fastpath-net/fastpath/test/bench/internal/loadgen"
	"github.com/fastpath-net/fastpath/test/bench/internal/netstat"
	"github.com/fastpath-net/fastpath/test/bench/internal/procstat"
	"github.com/fastpath-net/fastpath/test/bench/internal/rounds"
)

// The headline's data paths, in the order of the report. Each is a client
// reaching one of the N Services, picked at random per connection.
const (
	pathDirect = "direct" // fastpath's node, own client namespace -> backend IP:port, no Service
	pathTC     = "tc"     // fastpath's node, client namespace -> VIP, per-packet LB
	// pathDirectNode is sock's baseline: the same process placement (node
	// namespace, in the cgroup) -> backend IP:port. It is one veth hop
	// shorter than direct, so sock is compared with it, not with direct.
	pathDirectNode = "direct-node"
	pathSock       = "sock" // fastpath's node namespace, process in the socket-LB cgroup -> VIP
	pathIPT        = "iptables"
	pathNFT        = "nftables"
)

var pathNames = []string{pathDirect, pathTC, pathDirectNode, pathSock, pathIPT, pathNFT}

var pathTitles = map[string]string{
	pathDirect: "direct", pathTC: "fastpath TC", pathDirectNode: "direct from the node", pathSock: "fastpath socket LB",
	pathIPT: "kube-proxy iptables", pathNFT: "kube-proxy nftables",
}

// baseOf is the direct path a path is compared with.
func baseOf(path string) string {
	if path == pathSock {
		return pathDirectNode
	}
	return pathDirect
}

// clientPath is where a load generator runs and what it connects to.
type clientPath struct {
	name    string
	netns   string
	cgroup  string
	targets []string
}

// dataPoint is one load-generator run on one path.
type dataPoint struct {
	N       int
	Path    string
	Kind    string // loadgen.KindConn, KindLatency, KindStream
	Workers int
	Rep     int
	// Leg is 1 or 2 for a new-connection run of a path with a baseline
	// pair, its first or second half-window in the round's ABBA block
	// (roundRuns); 0 for a lone window. poolLegs makes the two one.
	Leg    int
	Window time.Duration // measured
	Load1  string
	// Rate: connections/s (conn), requests/s (latency), bits/s (stream).
	Rate     float64
	P50, P99 float64 // µs: whole connection, one request, one 128 KiB write
	Max      float64 // µs: the slowest; a lost SYN shows here as a second
	Ops      uint64
	Errors   uint64
	// The generator's own CPU over the window, % of one core (user part
	// apart: the rest is the kernel's network path it drives).
	ClientCPU, ClientUser float64
	// The kernel's TCP counters (netstat.Reported) over the run, warm-up
	// included, summed over every namespace of every node: only this path
	// carries traffic meanwhile. nil: not read.
	TCP map[string]uint64
	Err string
}

// cost is what one contender's programming of N Services occupies.
type cost struct {
	N            int
	Contender    string
	RSS          uint64 // the proxy process after its cold start
	MapBytes     uint64 // fastpath: kernel memlock accounting of its maps
	MapEntries   int    // fastpath: entries of its service, backend and reverse-NAT maps
	Rules        int    // kube-proxy: rules (iptables -A lines; nft rules and map elements)
	RulesetLines int    // kube-proxy: lines of iptables-save / nft list ruleset
	RulesetBytes int
	Err          string
}

// clientPaths are the paths the running contenders offer.
func clientPaths(live []*running, objs *objects, n int) []clientPath {
	vips := make([]string, n)
	direct := make([]string, n)
	for i := range n {
		vips[i] = netip.AddrPortFrom(objs.vips[i], svcPort).String()
		direct[i] = netip.AddrPortFrom(backendAddrs[i%len(backendAddrs)], uint16(portA+i/2%2)).String()
	}
	byName := map[string]clientPath{}
	for _, l := range live {
		client := l.nd.star.Host("client").NS.Path()
		switch l.name {
		case "fastpath":
			byName[pathDirect] = clientPath{name: pathDirect, netns: l.nd.star.Host("direct").NS.Path(), targets: direct}
			byName[pathTC] = clientPath{name: pathTC, netns: client, targets: vips}
			byName[pathDirectNode] = clientPath{name: pathDirectNode, netns: l.nd.star.Node.Path(), cgroup: l.nd.cgroup, targets: direct}
			byName[pathSock] = clientPath{name: pathSock, netns: l.nd.star.Node.Path(), cgroup: l.nd.cgroup, targets: vips}
		case "iptables":
			byName[pathIPT] = clientPath{name: pathIPT, netns: client, targets: vips}
		case "nftables":
			byName[pathNFT] = clientPath{name: pathNFT, netns: client, targets: vips}
		}
	}
	var out []clientPath
	for _, name := range pathNames {
		if p, ok := byName[name]; ok {
			out = append(out, p)
		}
	}
	return out
}

// loadKind is one kind of load measured on every path in each round.
type loadKind struct {
	kind    string
	workers int
	window  time.Duration
}

func loadKinds(d dataConfig) []loadKind {
	var out []loadKind
	for _, w := range d.Workers {
		out = append(out, loadKind{loadgen.KindConn, w, d.Window})
	}
	for _, w := range d.Workers {
		out = append(out, loadKind{loadgen.KindLatency, w, d.LatWindow})
	}
	return append(out, loadKind{loadgen.KindStream, 1, d.StreamWindow})
}

// connPairs are the paths whose new-connection rate the report divides by
// a baseline's, the baseline first: they share each round as an ABBA block.
var connPairs = [][2]string{{pathDirect, pathTC}, {pathDirectNode, pathSock}}

// roundRun is one load-generator window of a round.
type roundRun struct {
	path clientPath
	load loadKind
	leg  int // dataPoint.Leg
}

// roundRuns is round rep's runs, kind after kind. New connections: each
// of connPairs present in paths is one unit, an ABBA block of half-window
// legs (rounds.ABBA: base, path, path, base, the mirror in even rounds);
// each other path (kube-proxy's: no baseline) a unit of one whole window;
// the units' order rotates between rounds. A round's rate of a paired
// path pools its two legs (poolLegs), whose mean time is the block's
// middle for it and its baseline alike, so a drift linear over the block
// (4 × (window/2 + warm-up)) cancels from their ratio; one window each,
// as before, ran up to several windows apart and the drift between them
// went straight into the ratio. Other loads: one window per path, the
// paths' order rotated between rounds.
func roundRuns(rep int, paths []clientPath, kinds []loadKind) []roundRun {
	byName := map[string]clientPath{}
	for _, p := range paths {
		byName[p.name] = p
	}
	var out []roundRun
	for _, k := range kinds {
		var units [][]roundRun
		if k.kind != loadgen.KindConn {
			for _, p := range paths {
				units = append(units, []roundRun{{path: p, load: k}})
			}
		} else {
			paired := map[string]bool{}
			for _, p := range paths {
				if paired[p.name] {
					continue
				}
				unit := []roundRun{{path: p, load: k}}
				for _, pair := range connPairs {
					base, ok1 := byName[pair[0]]
					x, ok2 := byName[pair[1]]
					if !ok1 || !ok2 || (p.name != base.name && p.name != x.name) {
						continue
					}
					half := k
					half.window /= 2
					unit = nil
					for _, r := range rounds.ABBA(rep, base, x) {
						unit = append(unit, roundRun{path: r.Item, load: half, leg: r.Leg})
					}
					paired[base.name], paired[x.name] = true, true
				}
				units = append(units, unit)
			}
		}
		for j := range units {
			out = append(out, units[(j+rep-1)%len(units)]...)
		}
	}
	return out
}

// runOverhead is a load-generator run's wall time beyond its warm-up and
// window (starting it, the TCP counters of every namespace before and
// after): about 80 ms in TestHeadlineSmoke on the shared 2-core machine.
const runOverhead = 80 * time.Millisecond

// roundsTime is the expected wall time of one N's data rounds on paths.
func roundsTime(d dataConfig, paths []clientPath) time.Duration {
	var t time.Duration
	for rep := 1; rep <= d.Reps; rep++ {
		for _, r := range roundRuns(rep, paths, loadKinds(d)) {
			t += d.Warmup + r.load.window + runOverhead
		}
	}
	return t
}

// dataPath measures every path at n in cfg.Data.Reps rounds. Within a
// round each kind of load runs on every path back to back (roundRuns), in
// an order that changes between rounds, so drift of the machine (other
// work, a warming cache) hits every path alike; the report takes medians
// over the rounds and shows their spread. The proxies are paused: their
// programming is in the kernel and serves without them.
func dataPath(ctx context.Context, cfg config, objs *objects, n int, live []*running, res *results) error {
	// What the programming occupies, before traffic fills fastpath's
	// connection tracking (kube-proxy's is the kernel's, not counted).
	for _, l := range live {
		res.Costs = append(res.Costs, measureCost(ctx, l, res))
	}
	paths := clientPaths(live, objs, n)
	load1 := procstat.LoadAvg()
	tcp := tcpReader{cfg: cfg, nss: namespaces(live)}
	// Every path must carry traffic before anything is measured.
	var ok []clientPath
	for _, p := range paths {
		pt, err := runPoint(ctx, p, loadKind{loadgen.KindConn, 1, 200 * time.Millisecond}, 0, cfg.Data.Pool, nil)
		if err != nil {
			return err
		}
		if pt.Err == "" && (pt.Ops == 0 || pt.Errors > 0) {
			pt.Err = fmt.Sprintf("%d connections, %d errors", pt.Ops, pt.Errors)
		}
		if pt.Err != "" {
			logf(cfg, "N=%d %s: no traffic before the rounds, left out: %s", n, p.name, pt.Err)
			pt.N, pt.Load1 = n, load1
			res.Data = append(res.Data, *pt)
			continue
		}
		ok = append(ok, p)
	}
	before := fastpathCounters(live)
	kinds := loadKinds(cfg.Data)
	logf(cfg, "N=%d: %d data rounds on %d paths, about %s", n, cfg.Data.Reps, len(ok), roundsTime(cfg.Data, ok).Round(time.Second))
	for rep := 1; rep <= cfg.Data.Reps; rep++ {
		for _, r := range roundRuns(rep, ok, kinds) {
			pt, err := runPoint(ctx, r.path, r.load, cfg.Data.Warmup, cfg.Data.Pool, &tcp)
			if err != nil {
				return err
			}
			pt.N, pt.Rep, pt.Leg, pt.Load1 = n, rep, r.leg, load1
			res.Data = append(res.Data, *pt)
			logPoint(cfg, pt)
		}
	}
	if after := fastpathCounters(live); before != nil && after != nil {
		row := counterRow{N: n, Delta: netstat.Diff(after, before), ClashFlows: -1}
		if c, err := clashFlows(live); err != nil {
			logf(cfg, "N=%d: fastpath's connection tracking not read: %v", n, err)
		} else {
			row.ClashFlows = c
		}
		res.Counters = append(res.Counters, row)
	}
	return nil
}

// namespaces are every namespace of the live nodes: clients, router and
// backends, where a SYN is sent again or refused.
func namespaces(live []*running) []*nettopo.NS {
	var out []*nettopo.NS
	for _, l := range live {
		out = append(out, l.nd.star.Node)
		for _, h := range l.nd.star.Hosts {
			out = append(out, h.NS)
		}
	}
	return out
}

// tcpReader sums the reported TCP counters over nss. A kernel without one
// of them loses the counters, not the run: the first failure is logged,
// and the points say nothing (nil TCP).
type tcpReader struct {
	cfg    config
	nss    []*nettopo.NS
	failed bool
}

func (r *tcpReader) read() map[string]uint64 {
	if r == nil || r.failed {
		return nil
	}
	v, err := netstat.Sum(r.nss, netstat.Reported)
	if err != nil {
		r.failed = true
		logf(r.cfg, "TCP counters left out of the report: %v", err)
		return nil
	}
	return v
}

// counterRow is fastpath's datapath counters (fp_metrics packets) over one
// N's data rounds: how many flows each program balanced, and every drop.
type counterRow struct {
	N     int
	Delta map[string]uint64
	// ClashFlows are the flows in fastpath's connection tracking at the end
	// of the rounds that were given a source port of their own because
	// their tuple at the backend clashed with another flow's (ctmap.SNATPort;
	// fp_metrics counts no such event, only drop_snat_no_port when no port
	// was free). Entries live about as long as the backend's TIME_WAIT, so
	// this is the last minute or so of the rounds, not all. -1: not read.
	ClashFlows int
}

// clashFlows counts fastpath's forward flows with a clash port (ClashFlows).
func clashFlows(live []*running) (int, error) {
	for _, l := range live {
		a, ok := l.p.(*agent)
		if !ok {
			continue
		}
		pins, err := ctl.Open(a.pin)
		if err != nil {
			return 0, err
		}
		defer pins.Close()
		n := 0
		err = pins.CT.Range(func(k ctmap.Key, v ctmap.Entry) bool {
			if k.Dir == ctmap.Forward && v.Flags&ctmap.SNATPort != 0 {
				n++
			}
			return true
		})
		return n, err
	}
	return 0, errors.New("fastpath is not running")
}

// fastpathCounters reads fastpath's fp_metrics; nil when it is not running.
func fastpathCounters(live []*running) map[string]uint64 {
	for _, l := range live {
		if a, ok := l.p.(*agent); ok {
			pins, err := ctl.Open(a.pin)
			if err != nil {
				return nil
			}
			defer pins.Close()
			st, err := ctl.ReadStatus(pins)
			if err != nil {
				return nil
			}
			return st.Counters
		}
	}
	return nil
}

// runPoint runs the load generator once; a failed run is a point with Err.
// tcp, when not nil, reads the TCP counters around the run.
func runPoint(ctx context.Context, p clientPath, k loadKind, warmup time.Duration, pool int, tcp *tcpReader) (*dataPoint, error) {
	pt := &dataPoint{Path: p.name, Kind: k.kind, Workers: k.workers}
	tcp0 := tcp.read()
	r, err := loadgen.Run(ctx, loadgen.Spec{Cgroup: p.cgroup, Request: loadgen.Request{
		NetNS: p.netns, Targets: p.targets, Kind: k.kind, Workers: k.workers,
		Duration: k.window, Warmup: warmup, Pool: pool, Seed: rand.Uint64(),
	}})
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		pt.Err = err.Error()
		return pt, nil
	}
	pt.Rate, pt.Ops, pt.Errors, pt.Window = r.Rate(), r.Ops, r.Errors, r.Window
	if k.kind == loadgen.KindStream {
		pt.Rate *= 8
	}
	pt.P50, pt.P99, pt.Max = float64(r.P50)/1e3, float64(r.P99)/1e3, float64(r.Max)/1e3
	pt.ClientCPU = r.CPUPct()
	pt.ClientUser = 100 * r.UserSec / r.Window.Seconds()
	if tcp1 := tcp.read(); tcp0 != nil && tcp1 != nil {
		pt.TCP = netstat.Diff(tcp1, tcp0)
	}
	return pt, nil
}

func logPoint(cfg config, p *dataPoint) {
	if p.Err != "" {
		logf(cfg, "N=%-6d %-11s %-7s w=%d round %d%s: FAILED: %s", p.N, p.Path, p.Kind, p.Workers, p.Rep, legNote(p), p.Err)
		return
	}
	rate := fmt.Sprintf("%8.0f/s", p.Rate)
	if p.Kind == loadgen.KindStream {
		rate = fmt.Sprintf("%6.2f Gbit/s", p.Rate/1e9)
	}
	logf(cfg, "N=%-6d %-11s %-7s w=%d round %d%s: %s p50 %6.1fµs p99 %7.1fµs max %8.1fµs client CPU %3.0f%% errors %d synretrans %d paws-tw %d",
		p.N, p.Path, p.Kind, p.Workers, p.Rep, legNote(p), rate, p.P50, p.P99, p.Max, p.ClientCPU, p.Errors, p.TCP[netstat.SynRetrans], p.TCP[netstat.PAWSTimewait])
}

func legNote(p *dataPoint) string {
	if p.Leg == 0 {
		return ""
	}
	return fmt.Sprintf(" leg %d", p.Leg)
}

// poolLegs merges each round's two legs of a path (roundRuns) into one
// point, as if one run of both windows: rate = all operations / both
// windows; counts, TCP counters and CPU seconds add up; p50 and p99 are
// averaged weighted by operations (the histograms are gone), the slowest
// is the slower one; CPU percentages are averaged. A failed leg fails the
// round. Other points pass through.
func poolLegs(pts []dataPoint) []dataPoint {
	type key struct {
		N          int
		Path, Kind string
		Workers    int
		Rep        int
	}
	legOf := func(p dataPoint) (key, bool) { return key{p.N, p.Path, p.Kind, p.Workers, p.Rep}, p.Leg != 0 }
	first := func(p dataPoint) dataPoint {
		p.Leg, p.TCP = 0, maps.Clone(p.TCP)
		return p
	}
	return rounds.PoolLegs(pts, legOf, first, func(q *dataPoint, p dataPoint) {
		if q.Err != "" || p.Err != "" {
			q.Err = cmp.Or(q.Err, p.Err)
			return
		}
		if wa, wb := float64(q.Ops), float64(p.Ops); wa+wb > 0 {
			q.P50 = (q.P50*wa + p.P50*wb) / (wa + wb)
			q.P99 = (q.P99*wa + p.P99*wb) / (wa + wb)
		}
		q.Max = max(q.Max, p.Max)
		q.ClientCPU = (q.ClientCPU + p.ClientCPU) / 2
		q.ClientUser = (q.ClientUser + p.ClientUser) / 2
		q.Ops += p.Ops
		q.Errors += p.Errors
		q.Window += p.Window
		if q.TCP != nil && p.TCP != nil {
			for c, v := range p.TCP {
				q.TCP[c] += v
			}
		} else {
			q.TCP = nil // one leg not read: the round's sum is unknown
		}
		if q.Window > 0 {
			q.Rate = float64(q.Ops) / q.Window.Seconds()
		}
	})
}

// measureCost reads what a contender's programming occupies: fastpath's
// BPF maps (as fastpathctl status reports them), kube-proxy's ruleset as
// iptables-save / nft print it in the node's namespace.
func measureCost(ctx context.Context, l *running, res *results) cost {
	c := cost{N: l.n, Contender: l.name}
	for _, r := range res.Rows {
		if r.N == l.n && r.Contender == l.name {
			c.RSS = r.RSS
		}
	}
	switch p := l.p.(type) {
	case *agent:
		pins, err := ctl.Open(p.pin)
		if err != nil {
			c.Err = err.Error()
			return c
		}
		defer pins.Close()
		st, err := ctl.ReadStatus(pins)
		if err != nil {
			c.Err = err.Error()
			return c
		}
		c.MapBytes = st.MapMemoryBytes
		for _, m := range st.Maps {
			if lbMaps[m.Name] {
				c.MapEntries += m.Entries
			}
		}
	default:
		cmd := []string{"iptables-save"}
		if l.name == "nftables" {
			cmd = []string{"nft", "list", "ruleset"}
		}
		out, err := l.nd.thread.Run(ctx, cmd[0], cmd[1:]...)
		if err != nil {
			c.Err = err.Error()
			return c
		}
		c.RulesetBytes, c.RulesetLines, c.Rules = len(out), bytes.Count(out, []byte("\n")), countRules(l.name, out)
	}
	return c
}

// lbMaps hold the Services as fastpath programs them (frontends with one
// slot per backend, backends, reverse NAT); the rest is per-connection
// state or policy.
var lbMaps = map[string]bool{"fp_services": true, "fp_backends": true, "fp_rev_nat": true}

// countRules counts iptables rules (-A lines), or nft rules: the lines of
// a chain's body other than its type/policy header, plus the elements of
// kube-proxy's verdict maps and sets (each one a Service or endpoint
// match the kernel holds).
func countRules(mode string, dump []byte) int {
	rules := 0
	if mode != "nftables" {
		for _, l := range bytes.Split(dump, []byte("\n")) {
			if bytes.HasPrefix(l, []byte("-A ")) {
				rules++
			}
		}
		return rules
	}
	var inChain, inElements bool
	for _, raw := range bytes.Split(dump, []byte("\n")) {
		l := bytes.TrimSpace(raw)
		switch {
		case bytes.HasPrefix(l, []byte("chain ")):
			inChain = true
		case bytes.HasPrefix(l, []byte("elements = {")):
			inElements = true
			rules += countElements(l[len("elements = {"):])
			if bytes.HasSuffix(l, []byte("}")) {
				inElements = false
			}
		case inElements:
			rules += countElements(l)
			if bytes.HasSuffix(l, []byte("}")) {
				inElements = false
			}
		case bytes.Equal(l, []byte("}")):
			inChain = false
		case inChain && len(l) > 0 && !bytes.HasPrefix(l, []byte("type ")) && !bytes.HasPrefix(l, []byte("policy ")) && !bytes.HasPrefix(l, []byte("comment ")):
			rules++
		}
	}
	return rules
}

// countElements counts the comma-separated elements on one line of a set
// or map ("a . b : verdict, c . d : verdict,").
func countElements(l []byte) int {
	l = bytes.TrimSpace(bytes.TrimSuffix(bytes.TrimSpace(l), []byte("}")))
	if len(l) == 0 {
		return 0
	}
	return bytes.Count(bytes.TrimSuffix(l, []byte(",")), []byte(",")) + 1
}
