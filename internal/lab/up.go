package lab

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/fastpath-net/fastpath/internal/nettopo"
	"github.com/fastpath-net/fastpath/internal/routing"
)

// Options are `fastpath-lab up`'s flags.
type Options struct {
	Nodes       int          // default 2
	RoutingMode routing.Mode // default native
	Bin         string       // directory of fastpath-agent, fastpath-bgp, fastpathctl, fastpath-lab
	AgentArgs   []string     // more fastpath-agent flags (benchmarks: --pprof-addr)
}

func (o *Options) fill() error {
	if o.Nodes == 0 {
		o.Nodes = 2
	}
	if o.Nodes < 1 || o.Nodes > 9 {
		return fmt.Errorf("--nodes %d: want 1 to 9", o.Nodes)
	}
	if o.RoutingMode == "" {
		o.RoutingMode = routing.ModeNative
	}
	_, err := routing.ParseMode(string(o.RoutingMode))
	return err
}

// Up builds the lab, or re-checks it when it is already up.
func Up(ctx context.Context, opts Options, out io.Writer) error {
	if err := opts.fill(); err != nil {
		return err
	}
	if st, err := loadState(); err == nil && allAlive(st) {
		fmt.Fprintf(out, "lab is already up (%d nodes, %s routing; `make lab-down` first to change that); checking it again\n",
			st.Nodes, st.RoutingMode)
		return Report(ctx, opts.Bin, st, out)
	}
	if err := Down(io.Discard); err != nil { // leftovers of a lab that died
		return err
	}
	start := time.Now()
	if err := os.MkdirAll(StateDir, 0o755); err != nil {
		return err
	}
	st := &State{Nodes: opts.Nodes, RoutingMode: string(opts.RoutingMode), Processes: map[string]Proc{}, Started: start}
	if err := st.save(); err != nil {
		return err
	}
	if err := up(ctx, opts, st, out); err != nil {
		return fmt.Errorf("%w\n(logs: %s/*.log; `make lab-down` removes what was started)", err, StateDir)
	}
	fmt.Fprintf(out, "lab up in %.1fs\n", time.Since(start).Seconds())
	return Report(ctx, opts.Bin, st, out)
}

func up(ctx context.Context, opts Options, st *State, out io.Writer) error {
	fmt.Fprintf(out, "building %d nodes (%s routing) and a control plane in fp- namespaces...\n", opts.Nodes, opts.RoutingMode)
	if err := buildUnderlay(opts.Nodes); err != nil {
		return err
	}
	if err := startControlPlane(ctx, st); err != nil {
		return err
	}
	cs, ext, err := client()
	if err != nil {
		return err
	}
	defer ext.Release()
	if err := createNodes(ctx, cs, opts.Nodes); err != nil {
		return err
	}
	if err := installCRDs(ctx); err != nil {
		return err
	}
	if err := startRouter(st, opts.Nodes); err != nil {
		return err
	}
	if err := startAgents(opts, st); err != nil {
		return err
	}
	for i := 1; i <= opts.Nodes; i++ {
		if err := waitCNIReady(ctx, opts.Bin, i, agentTimeout); err != nil {
			return err
		}
	}
	pods := demoPods(opts.Nodes)
	for k, p := range pods {
		if pods[k], err = addPod(ctx, opts.Bin, p); err != nil {
			return err
		}
	}
	if err := startServers(opts.Bin, st, pods); err != nil {
		return err
	}
	for _, p := range pods {
		if err := registerPod(ctx, cs, p); err != nil {
			return err
		}
	}
	if err := createServices(ctx, cs); err != nil {
		return err
	}
	return waitEndpoints(ctx, cs, 3)
}

// startAgents runs fastpath-agent for every node, inside the node's
// namespace (its Kubernetes client reaches the apiserver over the
// underlay): Services from Kubernetes, the CNI API for the node's pods
// (pod CIDR from its Node object), its uplink as external interface, routes
// to the other nodes' pods, masquerade of pod traffic leaving the cluster,
// NetworkPolicy enforced; and fastpath-bgp next to it, advertising the
// LoadBalancer IPs over BGP to the router.
func startAgents(opts Options, st *State) error {
	for i := 1; i <= opts.Nodes; i++ {
		if err := startAgent(opts, st, i); err != nil {
			return err
		}
		if err := startSpeaker(opts, st, i); err != nil {
			return err
		}
	}
	return nil
}

// startAgent starts node i's agent; also how a test restarts one.
func startAgent(opts Options, st *State, i int) error {
	if err := os.MkdirAll(cniConfDir(i), 0o755); err != nil {
		return err
	}
	ns, err := nettopo.OpenNS(nodeNSName(i))
	if err != nil {
		return err
	}
	defer ns.Release()
	args := []string{"--kubeconfig", filepath.Join(StateDir, adminConfig),
		"--node-name", nodeName(i),
		"--netns", ns.Path(),
		"--bpffs-dir", filepath.Join(PinDir, nodeName(i)),
		"--external-interfaces", uplink,
		"--routing-mode", string(opts.RoutingMode),
		"--cluster-cidr", ClusterCIDR.String(),
		"--cni-socket", cniSocket(i),
		"--cni-state-dir", filepath.Join(nodeDir(i), "cni"),
		"--cni-conf-dir", cniConfDir(i),
		"--l2-announce-interfaces", uplink,
		"--l2-lease-duration", l2Lease.String(),
		"--node-probe-interval", "1s",
		"--enable-policy",
		"--enable-l7-proxy",
		// Per node: the lab's agents share the host's /run/fastpath.
		"--l7-handover-socket", filepath.Join(nodeDir(i), "l7-proxy.sock")}
	return spawn(st, ns, filepath.Join(opts.Bin, "fastpath-agent"), "agent-"+nodeName(i), append(args, opts.AgentArgs...)...)
}

// startSpeaker starts node i's fastpath-bgp, from a thread in the node's
// namespace like the agent (its client reaches the apiserver over the
// underlay), listening there on BGP's port for the lab's router.
func startSpeaker(opts Options, st *State, i int) error {
	ns, err := nettopo.OpenNS(nodeNSName(i))
	if err != nil {
		return err
	}
	defer ns.Release()
	return spawn(st, ns, filepath.Join(opts.Bin, "fastpath-bgp"), "bgp-"+nodeName(i),
		"--kubeconfig", filepath.Join(StateDir, adminConfig), "--node-name", nodeName(i), "--netns", ns.Path())
}

// l2Lease is the agents' --l2-lease-duration: shorter than the default, so
// the failover test waits less.
const l2Lease = 5 * time.Second

// startServers runs the web backends in their pods and a server on the
// external client, which tells a pod the address its request came from.
func startServers(bin string, st *State, pods []pod) error {
	self := filepath.Join(bin, "fastpath-lab")
	for _, p := range pods {
		if p.app != "web" {
			continue
		}
		if err := spawn(st, nil, self, p.name, "serve", "--netns", "/run/netns/"+podNSName(p.name),
			"--name", p.name, "--addr", p.ip.String()); err != nil {
			return err
		}
	}
	return spawn(st, nil, self, "external", "serve", "--netns", "/run/netns/"+extNSName(),
		"--name", "external", "--addr", externalIP.String())
}

// spawn starts a long-lived process in its own session (in ns's network
// namespace when ns is not nil), logging to StateDir/<name>.log, and records
// it in st at once; it outlives `make lab`.
func spawn(st *State, ns *nettopo.NS, path, name string, args ...string) error {
	logf, err := os.OpenFile(filepath.Join(StateDir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if ns != nil {
		err = ns.Start(cmd)
	} else {
		err = cmd.Start()
	}
	if err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	p, err := procOf(cmd.Process.Pid)
	_ = cmd.Process.Release()
	if err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	st.Processes[name] = p
	return st.save()
}

// allAlive says whether every recorded process still runs.
func allAlive(st *State) bool {
	if len(st.Processes) == 0 {
		return false
	}
	for _, p := range st.Processes {
		if !alive(p) {
			return false
		}
	}
	return true
}
