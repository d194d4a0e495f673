// Command cni measures pod network setup through fastpath-cni against the
// budget of issue 4 (CNI ADD p50 < 50 ms, p99 < 200 ms for 100 pods created
// 10 at a time) and writes docs/benchmarks/cni.md.
//
//	make bench-cni            # go run ./test/bench/cni -out docs/benchmarks
//
// A node namespace runs the real agent with the CNI API; pods are network
// namespaces attached through libcni with the conflist the agent installed,
// the plugin executed from threads in the node's namespace, as a container
// runtime on the node would. ADD returns once the pod's veth, address,
// routes and tc_lb are in place, so its latency is "ADD to ready".
//
// It also measures the CPU one plugin exec costs (the part of the latency
// that grows with concurrency on a small machine), next to an empty Go
// program. It asserts nothing. Everything lives in fp-bench-cni-* namespaces
// and a bpffs directory of the same name, removed at the end.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/fastpath-net/fastpath/internal/cniapi"
	"github.com/fastpath-net/fastpath/internal/cniserver"
	"github.com/fastpath-net/fastpath/internal/datapath"
	"github.com/fastpath-net/fastpath/internal/nettopo"
	"github.com/fastpath-net/fastpath/internal/podnet"
	"github.com/fastpath-net/fastpath/test/internal/syncbuf"
)

func main() {
	out := flag.String("out", "docs/benchmarks", "directory for cni.md")
	pods := flag.Int("pods", 100, "pods to create")
	par := flag.Int("parallel", 10, "ADDs in flight at once")
	reps := flag.Int("reps", 3, "runs of each mode, interleaved (the machine is shared: every run is reported)")
	flag.Parse()
	if err := run(*out, *pods, *par, *reps); err != nil {
		fmt.Fprintln(os.Stderr, "bench-cni:", err)
		os.Exit(1)
	}
}

type bench struct {
	dir, bin, pinDir string
	node             *nettopo.NS
	agent            *exec.Cmd
	log              syncbuf.Buffer // the agent's log: its own time per request
	pods             []*nettopo.NS
}

// result is one attach mode's measurements.
type result struct {
	mode               string
	wall               time.Duration
	add, del, agentAdd []time.Duration
	addExec, addAgent  time.Duration // CPU per pod: plugin processes, agent
}

func run(out string, pods, par, reps int) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (network namespaces, BPF)")
	}
	b := &bench{}
	defer b.close()
	if err := b.setup(); err != nil {
		return err
	}
	empty, err := execCPU(filepath.Join(b.bin, "empty"), 50, nil)
	if err != nil {
		return err
	}
	plugin, err := execCPU(filepath.Join(b.bin, "fastpath-cni"), 50, []string{"CNI_COMMAND=VERSION"})
	if err != nil {
		return err
	}
	for i := range pods {
		p, err := nettopo.NewNS(fmt.Sprintf("fp-bench-cni-%d", i))
		if err != nil {
			return err
		}
		b.pods = append(b.pods, p)
	}
	load := loadavg()
	var results []result
	for rep := range reps {
		for _, mode := range []string{"clsact", "tcx"} {
			r, err := b.measure(mode, par)
			if err != nil {
				return fmt.Errorf("%s: %w", mode, err)
			}
			r.mode = fmt.Sprintf("%s #%d", mode, rep+1)
			results = append(results, r)
		}
	}
	md := report(pods, par, load, results, empty, plugin)
	fmt.Print(md)
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(out, "cni.md"), []byte(md), 0o644)
}

// measure starts an agent attaching pods in mode, adds every pod, deletes
// them again and stops the agent.
func (b *bench) measure(mode string, par int) (result, error) {
	r := result{mode: mode}
	if err := b.startAgent(mode); err != nil {
		return r, err
	}
	defer b.stopAgent()
	agentCPU0 := procCPU(b.agent.Process.Pid)
	children0 := childrenCPU()
	start := time.Now()
	var err error
	r.add, err = b.each(par, func(c *libcni.CNIConfig, l *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
		_, err := c.AddNetworkList(context.Background(), l, rt)
		return err
	})
	if err != nil {
		return r, err
	}
	r.wall = time.Since(start)
	n := time.Duration(len(b.pods))
	r.addExec = (childrenCPU() - children0) / n
	r.addAgent = (procCPU(b.agent.Process.Pid) - agentCPU0) / n
	r.del, err = b.each(par, func(c *libcni.CNIConfig, l *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
		return c.DelNetworkList(context.Background(), l, rt)
	})
	r.agentAdd = b.agentTimes(cniapi.PathAdd)
	return r, err
}

func (b *bench) setup() error {
	var err error
	if b.dir, err = os.MkdirTemp("", "fp-bench-cni-"); err != nil {
		return err
	}
	b.bin = filepath.Join(b.dir, "bin")
	if err := os.WriteFile(filepath.Join(b.dir, "empty.go"), []byte("package main\n\nfunc main() {}\n"), 0o644); err != nil {
		return err
	}
	for _, pkg := range []string{"./cmd/fastpath-agent", "./cmd/fastpath-cni"} {
		if o, err := exec.Command("go", "build", "-o", b.bin+"/", pkg).CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %v\n%s", pkg, err, o)
		}
	}
	if o, err := exec.Command("go", "build", "-o", filepath.Join(b.bin, "empty"), filepath.Join(b.dir, "empty.go")).CombinedOutput(); err != nil {
		return fmt.Errorf("build empty: %v\n%s", err, o)
	}
	if b.pinDir, err = os.MkdirTemp("/sys/fs/bpf", "fp-bench-cni-"); err != nil {
		return err
	}
	if b.node, err = nettopo.NewNS("fp-bench-cni-node"); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(b.dir, "services.yaml"), []byte("services: []\n"), 0o644)
}

func (b *bench) startAgent(mode string) error {
	b.log.Reset()
	_ = os.Remove(b.conflist())
	b.agent = exec.Command(filepath.Join(b.bin, "fastpath-agent"),
		"--bpffs-dir", b.pinDir, "--netns", b.node.Path(), "--services-file", filepath.Join(b.dir, "services.yaml"),
		"--cni-socket", filepath.Join(b.dir, "cni.sock"), "--cni-state-dir", filepath.Join(b.dir, "state"),
		"--cni-conf-dir", filepath.Join(b.dir, "net.d"), "--pod-cidr", "10.244.0.0/22", "--cni-tc-mode", mode,
		"--ct-max", "4096", "--services-max", "4096", "--backends-max", "1024", "--revnat-max", "1024",
		"--sock-revnat-max", "1024", "--affinity-max", "1024", "--log-level", "debug")
	b.agent.Stderr = &b.log
	if err := b.agent.Start(); err != nil {
		return err
	}
	for range 300 {
		if _, err := os.Stat(b.conflist()); err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("agent did not install its conflist:\n%s", b.log.String())
}

func (b *bench) stopAgent() {
	if b.agent != nil && b.agent.Process != nil {
		_ = b.agent.Process.Signal(syscall.SIGTERM)
		_ = b.agent.Wait()
	}
	b.agent = nil
}

func (b *bench) conflist() string { return filepath.Join(b.dir, "net.d", cniserver.ConflistName) }

// each runs fn for every pod, par at a time, each worker on a thread in the
// node's namespace, and returns the latencies.
func (b *bench) each(par int, fn func(*libcni.CNIConfig, *libcni.NetworkConfigList, *libcni.RuntimeConf) error) ([]time.Duration, error) {
	list, err := libcni.ConfListFromFile(b.conflist())
	if err != nil {
		return nil, err
	}
	c := libcni.NewCNIConfigWithCacheDir([]string{b.bin}, filepath.Join(b.dir, "cache"), nil)
	next := make(chan int, len(b.pods))
	for i := range b.pods {
		next <- i
	}
	close(next)
	var mu sync.Mutex
	var lat []time.Duration
	var firstErr error
	var wg sync.WaitGroup
	for range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := b.node.Do(func() error {
				for i := range next {
					rt := &libcni.RuntimeConf{ContainerID: fmt.Sprintf("bench-%d", i), NetNS: b.pods[i].Path(), IfName: "eth0"}
					t0 := time.Now()
					if err := fn(c, list, rt); err != nil {
						return fmt.Errorf("pod %d: %w", i, err)
					}
					d := time.Since(t0)
					mu.Lock()
					lat = append(lat, d)
					mu.Unlock()
				}
				return nil
			})
			if err != nil {
				mu.Lock()
				firstErr = err
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	slices.Sort(lat)
	return lat, firstErr
}

func (b *bench) close() {
	b.stopAgent()
	for _, p := range b.pods {
		_ = p.Delete()
	}
	if b.node != nil {
		if hosts, err := podnet.HostIfaces(b.node.Path()); err == nil {
			for _, h := range hosts {
				_ = datapath.DetachTC(b.pinDir, datapath.Iface{NetNS: b.node.Path(), Name: h})
			}
		}
		_ = b.node.Delete()
	}
	if b.pinDir != "" {
		_ = datapath.Uninstall(b.pinDir)
	}
	if b.dir != "" {
		_ = os.RemoveAll(b.dir)
	}
}

// agentTimes are the agent's handler times for path, from its debug log
// lines `msg="cni request" path=/v1/add took=12.3ms`, sorted.
func (b *bench) agentTimes(path string) []time.Duration {
	var out []time.Duration
	for _, line := range strings.Split(b.log.String(), "\n") {
		if !strings.Contains(line, "path="+path+" ") {
			continue
		}
		_, took, ok := strings.Cut(line, "took=")
		if !ok {
			continue
		}
		if d, err := time.ParseDuration(strings.Fields(took)[0]); err == nil {
			out = append(out, d)
		}
	}
	slices.Sort(out)
	return out
}

// execCPU runs path n times one after the other and returns the user+system
// CPU of each run, sorted.
func execCPU(path string, n int, env []string) ([]time.Duration, error) {
	var out []time.Duration
	for range n {
		cmd := exec.Command(path)
		cmd.Env = env
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, cmd.ProcessState.UserTime()+cmd.ProcessState.SystemTime())
	}
	slices.Sort(out)
	return out, nil
}

// childrenCPU is the CPU of this process's finished children (the plugins
// libcni ran; the agent is still running and not counted).
func childrenCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is the user+system CPU of pid so far.
func procCPU(pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

func loadavg() string {
	data, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := int(float64(len(d)-1) * p)
	return d[i]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

func report(pods, par int, load string, results []result, empty, plugin []time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# CNI benchmark\n\n")
	fmt.Fprintf(&b, "`make bench-cni` (test/bench/cni): %d pods, %d ADDs in flight, through libcni and the real\n", pods, par)
	fmt.Fprintf(&b, "fastpath-cni with the conflist the agent installs, run from threads in the node's namespace. ADD\n")
	fmt.Fprintf(&b, "returns when the pod's veth, /32, routes and tc_lb are in place (\"ADD to ready\"). Measured %s\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "on %d CPUs shared with other work, load average at start %s. Budget: ADD p50 < 50 ms, p99 < 200 ms.\n\n",
		runtime.NumCPU(), load)
	fmt.Fprintf(&b, "tc_lb attach mode on pod veths: clsact is the default; tcx is used when bandwidth is chained\n")
	fmt.Fprintf(&b, "(`--cni-tc-mode`). A TCX attach waits for an RCU grace period while holding RTNL, which\n")
	fmt.Fprintf(&b, "serialises concurrent pod setups.\n\n")
	fmt.Fprintf(&b, "| mode, run | | p50 | p90 | p99 | max |\n|---|---|---|---|---|---|\n")
	for _, r := range results {
		row := func(name string, d []time.Duration) {
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", r.mode, name, ms(pct(d, .5)), ms(pct(d, .9)), ms(pct(d, .99)), ms(pct(d, 1)))
		}
		row("ADD", r.add)
		row("agent's part of ADD", r.agentAdd)
		row("DEL", r.del)
	}
	fmt.Fprintf(&b, "\nThe agent's part is its API handler's time (from its debug log); the rest of an ADD is libcni,\n")
	fmt.Fprintf(&b, "the plugin's exec and start-up, and waiting for a CPU.\n\n")
	fmt.Fprintf(&b, "| mode, run | wall time of all ADDs | CPU per ADD: plugin processes | CPU per ADD: agent |\n|---|---|---|---|\n")
	for _, r := range results {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", r.mode, ms(r.wall), ms(r.addExec), ms(r.addAgent))
	}
	fmt.Fprintf(&b, "\n(agent CPU from /proc at 10 ms resolution.) CPU (user+system) of one exec, 50 sequential runs:\n\n")
	fmt.Fprintf(&b, "| program | p50 | p90 |\n|---|---|---|\n")
	fmt.Fprintf(&b, "| empty Go program | %s | %s |\n", ms(pct(empty, .5)), ms(pct(empty, .9)))
	fmt.Fprintf(&b, "| fastpath-cni VERSION | %s | %s |\n", ms(pct(plugin, .5)), ms(pct(plugin, .9)))
	return b.String()
}
