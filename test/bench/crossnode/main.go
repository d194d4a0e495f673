// Command crossnode measures pod-to-pod TCP throughput across two nodes
// (iperf3, one stream) on three paths, and writes docs/benchmarks/crossnode.md:
//
//   - veth: the same namespaces, veths and routes with no fastpath at all
//     (the routes to the other node's pod CIDR added by hand);
//
//   - native: fastpath's native routing (routes via the node's address) with
//     the load balancer attached at every interface as the agent attaches it
//     (pod veth and tunnel: internal; uplink: external) and egress masquerade on;
//
//   - vxlan: fastpath's tunnel (fp_vxlan, tc_tunnel), likewise with the load
//     balancer, pod MTU 1450.
//
//     make bench-crossnode     # go run ./test/bench/crossnode -out docs/benchmarks
//
// It asserts nothing. Everything lives in fp- namespaces and fp-bench-*
// bpffs directories, removed at the end.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fastpath-net/fastpath/internal/datapath"
	"github.com/fastpath-net/fastpath/internal/nettopo"
	"github.com/fastpath-net/fastpath/internal/routing"
)

func main() {
	out := flag.String("out", "docs/benchmarks", "directory for crossnode.md")
	secs := flag.Int("seconds", 10, "length of one iperf3 run")
	reps := flag.Int("reps", 3, "runs per path; the median is reported")
	flag.Parse()
	if err := run(*out, *secs, *reps); err != nil {
		fmt.Fprintln(os.Stderr, "crossnode:", err)
		os.Exit(1)
	}
}

type result struct {
	path string
	gbps []float64
}

func (r result) median() float64 {
	s := slices.Clone(r.gbps)
	slices.Sort(s)
	return s[len(s)/2]
}

func run(out string, secs, reps int) error {
	// Interleaved (veth, native, vxlan, veth, ...), so a change in the
	// machine's load hits every path alike.
	paths := []string{"veth", "native", "vxlan"}
	results := make([]result, len(paths))
	for i := range reps {
		for k, path := range paths {
			g, err := measure(path, secs)
			if err != nil {
				return fmt.Errorf("%s run %d: %w", path, i+1, err)
			}
			fmt.Printf("%-7s run %d: %.2f Gbit/s\n", path, i+1, g)
			results[k].path = path
			results[k].gbps = append(results[k].gbps, g)
		}
	}
	return write(filepath.Join(out, "crossnode.md"), results, secs, reps)
}

// measure builds a fresh pair of nodes for path and runs iperf3 once.
func measure(path string, secs int) (float64, error) {
	mtu := 1500
	if path == "vxlan" {
		mtu -= routing.VXLANOverhead
	}
	pair, err := nettopo.NewPair("bench", mtu)
	if err != nil {
		return 0, err
	}
	defer pair.Close()
	if path == "veth" {
		for i := range 2 {
			if err := pair.Nodes[i].AddRoute(nettopo.PairPodCIDR(1-i), nettopo.PairNodeIP(1-i), "eth0"); err != nil {
				return 0, err
			}
		}
	} else {
		for i := range 2 {
			cleanup, err := setupFastpath(pair, i, routing.Mode(path))
			if cleanup != nil {
				defer cleanup()
			}
			if err != nil {
				return 0, err
			}
		}
	}
	return iperf(pair, secs)
}

// setupFastpath does on node i what the agent does: load the datapath with
// egress masquerade, prepare routing, attach the load balancer, sync routes.
func setupFastpath(pair *nettopo.Pair, i int, mode routing.Mode) (func(), error) {
	node := pair.Nodes[i]
	pinDir := "/sys/fs/bpf/fp-bench-" + strings.TrimPrefix(node.Name, nettopo.Prefix)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	r, err := routing.New(routing.Config{Mode: mode, NodeName: node.Name, NetNS: node.Path(), PinDir: pinDir, Underlay: "eth0", Log: log})
	if err != nil {
		return func() { _ = datapath.Uninstall(pinDir) }, err
	}
	dp, err := datapath.Load(datapath.Config{PinDir: pinDir, Masquerade: datapath.Masquerade{
		IP: nettopo.PairNodeIP(i), ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}}})
	cleanup := func() {
		r.Close()
		if dp != nil {
			dp.Close()
		}
		_ = datapath.Uninstall(pinDir)
	}
	if err != nil {
		return cleanup, err
	}
	internal := []string{"pod"}
	if dev := r.Device(); dev != "" {
		internal = append(internal, dev)
	}
	for _, ifc := range internal {
		if _, err := dp.AttachTC(datapath.Iface{NetNS: node.Path(), Name: ifc}); err != nil {
			return cleanup, err
		}
	}
	if _, err := dp.AttachTCRole(datapath.Iface{NetNS: node.Path(), Name: "eth0"}, datapath.RoleExternal); err != nil {
		return cleanup, err
	}
	var nodes []routing.Node
	for j, n := range pair.Nodes {
		nodes = append(nodes, routing.Node{Name: n.Name, IP: nettopo.PairNodeIP(j), PodCIDRs: []netip.Prefix{nettopo.PairPodCIDR(j)}})
	}
	return cleanup, r.Sync(nodes)
}

// iperf runs an iperf3 server in pod 1 and a client in pod 0 (both with
// `ip netns exec`: iperf3 needs no bpffs) and returns the received rate.
func iperf(pair *nettopo.Pair, secs int) (float64, error) {
	srv := exec.Command("ip", "netns", "exec", pair.Pods[1].Name, "iperf3", "-s", "-1", "-B", nettopo.PairPodIP(1).String())
	if err := srv.Start(); err != nil {
		return 0, err
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	var outb []byte
	var err error
	for range 50 { // the server needs a moment to listen
		time.Sleep(100 * time.Millisecond)
		outb, err = exec.Command("ip", "netns", "exec", pair.Pods[0].Name, "iperf3", "-c", nettopo.PairPodIP(1).String(),
			"-t", fmt.Sprint(secs), "-J").Output()
		if err == nil {
			break
		}
	}
	if err != nil {
		return 0, fmt.Errorf("iperf3: %w: %s", err, outb)
	}
	var rep struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(outb, &rep); err != nil {
		return 0, err
	}
	return rep.End.SumReceived.BitsPerSecond / 1e9, nil
}

func write(path string, results []result, secs, reps int) error {
	var b strings.Builder
	host, _ := os.Hostname()
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(&b, "# Pod-to-pod TCP throughput across nodes\n\n")
	fmt.Fprintf(&b, "`make bench-crossnode` (test/bench/crossnode), %s, host %s, load average at the end %s\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), host, strings.Join(strings.Fields(string(load))[:3], " "))
	fmt.Fprintf(&b, "One iperf3 TCP stream from a pod on node 1 to a pod on node 2 (two network namespaces per node, "+
		"nodes joined by one veth), %d s per run, median of %d runs, the paths interleaved. Measured, not asserted; the machine is shared.\n\n", secs, reps)
	b.WriteString("| path | median Gbit/s | runs | vs plain veth |\n|---|---|---|---|\n")
	base := results[0].median()
	for _, r := range results {
		runs := make([]string, len(r.gbps))
		for i, g := range r.gbps {
			runs[i] = fmt.Sprintf("%.2f", g)
		}
		fmt.Fprintf(&b, "| %s | %.2f | %s | %.1f %% |\n", r.path, r.median(), strings.Join(runs, ", "), 100*r.median()/base)
	}
	b.WriteString("\n- **veth**: no fastpath; the nodes route the other pod CIDR via the other node by hand.\n")
	b.WriteString("- **native**: fastpath native routing (routes of protocol 250 from the Node table), tc_lb on the pod veth and the uplink, egress masquerade on (in-cluster traffic is not masqueraded).\n")
	b.WriteString("- **vxlan**: fp_vxlan in collect-metadata mode with tc_tunnel setting the tunnel key, tc_lb on the pod veth, the tunnel and the uplink; pod MTU 1450.\n")
	b.WriteString("\nIssue 4's budget: native within 90 % of the plain veth path; VXLAN overhead reported.\n")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
