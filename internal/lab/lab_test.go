package lab

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"k8s.io/client-go/kubernetes"

	"github.com/fastpath-net/fastpath/internal/nettopo"

	"github.com/fastpath-net/fastpath/internal/routing"
	"github.com/fastpath-net/fastpath/internal/testenv"
	"github.com/fastpath-net/fastpath/internal/testpriv"
)

// TestLabUpDown runs the real lab (control plane, two nodes, agents, pods
// through fastpath-cni) in each routing mode, requires every check of its
// table to pass (known gaps aside), and then requires `down` to leave no
// namespace, pin, state file or process behind.
func TestLabUpDown(t *testing.T) {
	testpriv.Require(t)
	if testing.Short() {
		t.Skip("starts a control plane and two nodes")
	}
	bin := buildLab(t)
	for _, mode := range []routing.Mode{routing.ModeNative, routing.ModeVXLAN} {
		t.Run(string(mode), func(t *testing.T) { upDown(t, bin, mode) })
	}
}

// buildLab builds the lab's binaries into a temporary directory, after
// checking the control plane's binaries are there.
func buildLab(t *testing.T) string {
	t.Helper()
	if _, err := testenv.BinDir(); err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+"/", "../../cmd/fastpath-agent", "../../cmd/fastpath-bgp", "../../cmd/fastpath-cni",
		"../../cmd/fastpath-lab", "../../cmd/fastpathctl")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// startLab brings a lab up under names of its own (so it runs beside a
// user's lab and other tests), taken down when the test ends, and returns
// the `up` output.
func startLab(t *testing.T, bin string, mode routing.Mode) string {
	t.Helper()
	id := make([]byte, 3)
	_, _ = rand.Read(id)
	tag := "lt" + hex.EncodeToString(id)
	oldBase, oldState, oldPin := Base, StateDir, PinDir
	Base, StateDir, PinDir = "fp-"+tag, "/run/fastpath-"+tag, "/sys/fs/bpf/fastpath-"+tag
	t.Cleanup(func() {
		if err := Down(io.Discard); err != nil {
			t.Errorf("down in cleanup: %v", err)
		}
		Base, StateDir, PinDir = oldBase, oldState, oldPin
	})
	var out bytes.Buffer
	err := Up(t.Context(), Options{Nodes: 2, RoutingMode: mode, Bin: bin}, &out)
	if err != nil {
		t.Fatalf("up: %v\n%s\n%s", err, out.String(), logs())
	}
	return out.String()
}

func upDown(t *testing.T, bin string, mode routing.Mode) {
	var out bytes.Buffer
	out.WriteString(startLab(t, bin, mode))
	t.Logf("%s", out.String())
	wants := []string{"ok    pods attached by fastpath-cni", "ok    pod -> pod, same node", "ok    pod -> pod, across nodes", "ok    pod -> ClusterIP",
		"ok    external -> LoadBalancer IP", "ok    external -> L2-announced LB IP", "ok    BGP: router learned", "ok    pod -> external"}
	if nodePortRedirect() {
		wants = append(wants, "ok    external -> NodePort 192.168.50.11", "ok    external -> NodePort 192.168.50.12")
	}
	for _, want := range wants {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the table has no %q line", want)
		}
	}
	st, err := loadState()
	if err != nil {
		t.Fatal(err)
	}
	policyChecks(t, st, Options{Nodes: 2, RoutingMode: mode, Bin: bin})
	l7Checks(t, st, Options{Nodes: 2, RoutingMode: mode, Bin: bin})
	metricsChecks(t, st)
	nodeProbeChecks(t, st, Options{Nodes: 2, RoutingMode: mode, Bin: bin})
	restartAgent(t, st, Options{Nodes: 2, RoutingMode: mode, Bin: bin})
	l2Failover(t, st, Options{Nodes: 2, RoutingMode: mode, Bin: bin})
	// A second up finds the lab running and checks it again.
	out.Reset()
	if err := Up(t.Context(), Options{Nodes: 2, RoutingMode: mode, Bin: bin}, &out); err != nil ||
		!strings.Contains(out.String(), "already up") {
		t.Errorf("second up: %v\n%s", err, out.String())
	}
	if err := Down(io.Discard); err != nil {
		t.Fatalf("down: %v", err)
	}
	for name, p := range st.Processes {
		if alive(p) {
			t.Errorf("process %s (pid %d) still runs after down", name, p.PID)
		}
	}
	if ns := labNamespaces(); len(ns) > 0 {
		t.Errorf("namespaces left after down: %v", ns)
	}
	for _, dir := range []string{PinDir, StateDir} {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still exists after down (%v)", dir, err)
		}
	}
}

// restartAgent stops node 1's agent, checks pods still talk across nodes
// (the datapath and routes stay), damages node 1's routes (a stale route of
// ours, the good one gone) and starts the agent again, which must put them
// right.
func restartAgent(t *testing.T, st *State, opts Options) {
	t.Helper()
	if err := stop(st.Processes["agent-node1"]); err != nil {
		t.Fatal(err)
	}
	pods, err := podsWithIPs(t.Context(), mustClient(t), opts.Nodes)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := nettopo.OpenNS(podNSName("client"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Release()
	web1 := findPod(pods, "web-1")
	if c := checkReach(cl, "", net.JoinHostPort(web1.ip.String(), fmt.Sprint(webWhoami)), "web-1"); c.err != nil {
		t.Errorf("agent stopped: client -> web-1 across nodes: %v", c.err)
	}
	node, err := nettopo.OpenNS(nodeNSName(1))
	if err != nil {
		t.Fatal(err)
	}
	defer node.Release()
	nl := node.Netlink()
	stale := &netlink.Route{Dst: &net.IPNet{IP: net.IPv4(10, 244, 99, 0), Mask: net.CIDRMask(24, 32)},
		Gw: nodeIP(2).AsSlice(), Protocol: routing.RouteProtocol}
	good := &netlink.Route{Dst: &net.IPNet{IP: podCIDR(2).Addr().AsSlice(), Mask: net.CIDRMask(24, 32)},
		Protocol: routing.RouteProtocol}
	if err := nl.RouteAdd(stale); err != nil {
		t.Fatal(err)
	}
	routes, _ := nl.RouteListFiltered(netlink.FAMILY_V4, good, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_DST)
	for _, r := range routes {
		if err := nl.RouteDel(&r); err != nil {
			t.Fatal(err)
		}
	}
	if err := startAgent(opts, st, 1); err != nil {
		t.Fatal(err)
	}
	var got []string
	for range 100 {
		rs, err := nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: routing.RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
		if err != nil {
			t.Fatal(err)
		}
		got = got[:0]
		for _, r := range rs {
			got = append(got, r.Dst.String())
		}
		if len(got) == 1 && got[0] == podCIDR(2).String() {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(got) != 1 || got[0] != podCIDR(2).String() {
		t.Fatalf("node1's routes after the agent's restart: %v, want only %s", got, podCIDR(2))
	}
	if c := checkReach(cl, "", net.JoinHostPort(web1.ip.String(), fmt.Sprint(webWhoami)), "web-1"); c.err != nil {
		t.Errorf("agent restarted: client -> web-1 across nodes: %v", c.err)
	}
}

// l2Failover kills (SIGKILL: its Lease is not released) the agent that
// announces L2LBIP. The client must then reach the IP through another
// node, which it can only learn from that node's gratuitous ARP (the old
// node's datapath keeps serving), within the Lease duration plus three
// retry periods (the other node sees the last renewal up to one jittered
// retry period late, and tries again one later) and a second of probing.
// The agent is started again.
func l2Failover(t *testing.T, st *State, opts Options) {
	t.Helper()
	cs := mustClient(t)
	ext, err := nettopo.OpenNS(extNSName())
	if err != nil {
		t.Fatal(err)
	}
	defer ext.Release()
	holder, err := waitL2Holder(t.Context(), cs, "", agentTimeout)
	if err != nil {
		t.Fatal(err)
	}
	var i int
	if _, err := fmt.Sscanf(holder, "node%d", &i); err != nil {
		t.Fatalf("Lease holder %q: %v", holder, err)
	}
	url := fmt.Sprintf("http://%s/", L2LBIP)
	if _, err := httpGet(ext, url); err != nil {
		t.Fatalf("before the kill: %v", err)
	}
	p := st.Processes["agent-"+holder]
	killed := time.Now()
	if err := syscall.Kill(p.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var via string
	for deadline := killed.Add(2*l2Lease + 5*time.Second); ; time.Sleep(100 * time.Millisecond) {
		_, err := httpGet(ext, url)
		via, _ = l2NextHop(ext, opts.Nodes)
		if err == nil && via != "" && via != holder {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached through another node than %s within %s of killing its agent (last: via %q, %v)", L2LBIP, holder, 2*l2Lease+5*time.Second, via, err)
		}
	}
	failover := time.Since(killed)
	t.Logf("L2 failover from %s to %s: %.1fs after SIGKILL of its agent (Lease %s)", holder, via, failover.Seconds(), l2Lease)
	if h := l2Holder(t.Context(), cs); h != via {
		t.Errorf("the client goes through %s, the Lease is held by %q", via, h)
	}
	if limit := l2Lease + 3*l2Lease*2/15 + time.Second; failover > limit {
		t.Errorf("failover took %s, want at most %s", failover, limit)
	}
	if err := startAgent(opts, st, i); err != nil {
		t.Fatal(err)
	}
}

func mustClient(t *testing.T) *kubernetes.Clientset {
	t.Helper()
	cs, ext, err := client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ext.Release)
	return cs
}

// logs returns the tails of the lab's logs, for a failed up.
func logs() string {
	paths, _ := filepath.Glob(filepath.Join(StateDir, "*.log"))
	var b strings.Builder
	for _, p := range paths {
		data, _ := os.ReadFile(p)
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > 15 {
			lines = lines[len(lines)-15:]
		}
		b.WriteString("--- " + p + " ---\n" + strings.Join(lines, "\n") + "\n")
	}
	return b.String()
}

func TestAliveSeesAJustStartedProcess(t *testing.T) {
	cmd := exec.Command("sleep", "5")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p, err := procOf(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if !alive(p) {
		t.Fatal("a process just started counts as dead")
	}
	if alive(Proc{PID: p.PID, Start: p.Start + 1}) {
		t.Fatal("a process with another start time (a reused PID) counts as ours")
	}
	_ = cmd.Process.Kill()
	// Not reaped yet: a zombie, which is dead.
	for range 100 {
		if st, _, err := procStat(p.PID); err == nil && st == 'Z' {
			break
		}
		_ = exec.Command("true").Run()
	}
	if alive(p) {
		t.Fatal("a killed, unreaped process counts as alive")
	}
	_ = cmd.Wait()
}
