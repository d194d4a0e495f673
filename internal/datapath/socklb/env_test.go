package socklb

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfmap"
	"github.com/fastpath-net/fastpath/internal/datapath/bpfobj"
	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
	"github.com/fastpath-net/fastpath/internal/testpriv"
)

const (
	cgroupRoot = "/sys/fs/cgroup/unified"
	bpfRoot    = "/sys/fs/bpf"
)

// Two backends on lo inside the test namespace, each running a TCP and a UDP
// server that answer with their name.
var backendAddrs = map[string]netip.Addr{
	"b1": netip.MustParseAddr("10.200.0.1"),
	"b2": netip.MustParseAddr("10.200.0.2"),
}

const (
	backendTCPPort = 8080
	backendUDPPort = 5353
)

// The VIPs are not routed in the namespace: an untranslated connect to them
// fails at once with ENETUNREACH instead of waiting for a timeout.
var (
	vipTCP     = netip.MustParseAddrPort("10.96.0.10:80")
	vipUDP     = netip.MustParseAddrPort("10.96.0.10:53")
	vipEmptyT  = netip.MustParseAddrPort("10.96.0.11:80")
	vipEmptyU  = netip.MustParseAddrPort("10.96.0.11:53")
	backendIDs = map[string]uint32{"b1-tcp": 1, "b2-tcp": 2, "b1-udp": 3, "b2-udp": 4}
)

// Metric indexes, from enum fp_metric_index in bpf/include/fastpath.h.
const (
	metricBackendGone   uint32 = 7
	metricSockConnect   uint32 = 8
	metricSockNoBackend uint32 = 9
)

// env is one isolated world: a network namespace with servers, a cgroup,
// private pinned maps and the programs attached to that cgroup.
type env struct {
	t       *testing.T
	nsName  string
	nsPath  string
	cgroup  string
	pinDir  string
	linkDir string
	objs    *bpfobj.SocklbObjects
	lb      lbmap.Maps
	srv     *servers
}

func randSuffix(t *testing.T) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func requireKernel(t *testing.T) {
	t.Helper()
	testpriv.Require(t)
	var fs unix.Statfs_t
	if err := unix.Statfs(cgroupRoot, &fs); err != nil || fs.Type != unix.CGROUP2_SUPER_MAGIC {
		testpriv.Unavailable(t, cgroupRoot+" is not a cgroup v2 mount")
	}
	if err := unix.Statfs(bpfRoot, &fs); err != nil || fs.Type != unix.BPF_FS_MAGIC {
		testpriv.Unavailable(t, bpfRoot+" is not a bpffs mount (mount -t bpf bpf /sys/fs/bpf)")
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatalf("remove memlock limit: %v", err)
	}
}

// newEnv builds the world and attaches the programs. Everything it creates
// is removed by t.Cleanup, in reverse order, also when the test fails.
func newEnv(t *testing.T) *env {
	requireKernel(t)
	e := &env{t: t}
	e.pinDir = newPinDir(t)
	e.linkDir = filepath.Join(e.pinDir, "links")
	e.objs = loadObjects(t, e.pinDir)
	e.lb = lbmap.Maps{
		Services: bpfmap.NewKernel[lbmap.ServiceKey, lbmap.ServiceValue](e.objs.FpServices, "fp_services"),
		Backends: bpfmap.NewKernel[uint32, lbmap.Backend](e.objs.FpBackends, "fp_backends"),
		RevNat:   bpfmap.NewKernel[uint32, lbmap.RevNat](e.objs.FpRevNat, "fp_rev_nat"),
	}
	suffix := randSuffix(t)
	e.nsName = "fp-socklb-" + suffix
	e.nsPath = newNetns(t, e.nsName)
	e.srv = startServers(t, e.nsPath)
	e.cgroup = newCgroup(t, "fp-socklb-"+suffix)
	if err := Attach(e.objs, e.cgroup, e.linkDir); err != nil {
		t.Fatalf("attach: %v", err)
	}
	t.Cleanup(func() {
		if err := Detach(e.linkDir); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return e
}

func newPinDir(t *testing.T) string {
	dir, err := os.MkdirTemp(bpfRoot, "fp-test-")
	if err != nil {
		t.Fatalf("pin dir: %v", err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("cleanup: remove pin dir %s: %v", dir, err)
		}
	})
	return dir
}

// loadObjects loads a fresh copy of the programs; the maps are pinned in
// pinDir, so a second load shares them like a restarted agent would.
func loadObjects(t *testing.T, pinDir string) *bpfobj.SocklbObjects {
	spec, err := bpfobj.LoadSocklb()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range spec.Maps {
		if m.MaxEntries > 1024 && m.Type != ebpf.PerCPUArray && m.Type != ebpf.RingBuf { // a ring is sized in pages
			m.MaxEntries = 1024 // keep the test's memory small
		}
	}
	objs := &bpfobj.SocklbObjects{}
	err = spec.LoadAndAssign(objs, &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: pinDir}})
	var verr *ebpf.VerifierError
	if errors.As(err, &verr) {
		t.Fatalf("verifier: %+v", verr)
	}
	if err != nil {
		t.Fatalf("load sock_lb: %v", err)
	}
	t.Cleanup(func() { objs.Close() })
	return objs
}

// inNetns runs fn on a thread that has entered the namespace at nsPath. The
// thread stays locked and dies with the goroutine, so no other goroutine can
// inherit the namespace.
func inNetns(nsPath string, fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		ns, err := netns.GetFromPath(nsPath)
		if err != nil {
			done <- fmt.Errorf("open netns %s: %w", nsPath, err)
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			done <- fmt.Errorf("enter netns %s: %w", nsPath, err)
			return
		}
		done <- fn()
	}()
	return <-done
}

// newNetns creates the named namespace with lo up and the backend addresses
// on lo, and returns its path.
func newNetns(t *testing.T, name string) string {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: this thread ends in the new netns
		ns, err := netns.NewNamed(name)
		if err == nil {
			ns.Close()
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatalf("create netns %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("cleanup: delete netns %s: %v", name, err)
		}
	})
	path := filepath.Join("/run/netns", name)
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", name, err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatalf("lo in %s: %v", name, err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatalf("set lo up in %s: %v", name, err)
	}
	for _, a := range backendAddrs {
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)}}
		if err := h.AddrAdd(lo, addr); err != nil {
			t.Fatalf("add %s to lo in %s: %v", a, name, err)
		}
	}
	return path
}

// newCgroup creates a cgroup v2 directory and removes it at cleanup, once
// the clients placed in it have been waited for.
func newCgroup(t *testing.T, name string) string {
	path := filepath.Join(cgroupRoot, name)
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatalf("create cgroup %s: %v", path, err)
	}
	t.Cleanup(func() {
		// A reaped child can keep the cgroup busy for a moment.
		var err error
		for range 50 {
			if err = os.Remove(path); err == nil || !errors.Is(err, unix.EBUSY) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			t.Errorf("cleanup: remove cgroup %s: %v", path, err)
		}
	})
	return path
}

// servers answer every TCP connection and UDP datagram with the backend's
// name, and count what they see.
type servers struct {
	mu    sync.Mutex
	seen  map[string]int // "b1/tcp" -> connections or datagrams
	close []io.Closer
}

func startServers(t *testing.T, nsPath string) *servers {
	s := &servers{seen: map[string]int{}}
	t.Cleanup(func() {
		for _, c := range s.close {
			c.Close()
		}
	})
	err := inNetns(nsPath, func() error {
		for name, a := range backendAddrs {
			ln, err := net.ListenTCP("tcp4", net.TCPAddrFromAddrPort(netip.AddrPortFrom(a, backendTCPPort)))
			if err != nil {
				return err
			}
			s.close = append(s.close, ln)
			go s.serveTCP(name, ln)
			pc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, backendUDPPort)))
			if err != nil {
				return err
			}
			s.close = append(s.close, pc)
			go s.serveUDP(name, pc)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("start servers: %v", err)
	}
	return s
}

func (s *servers) count(key string) {
	s.mu.Lock()
	s.seen[key]++
	s.mu.Unlock()
}

// total returns how many connections and datagrams all servers have seen.
func (s *servers) total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, v := range s.seen {
		n += v
	}
	return n
}

func (s *servers) serveTCP(name string, ln *net.TCPListener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		s.count(name + "/tcp")
		go func() {
			defer c.Close()
			fmt.Fprintf(c, "%s\n", name)
			// Hold the connection until the client closes it, so the
			// client can ask getpeername on a live socket.
			io.Copy(io.Discard, c)
		}()
	}
}

func (s *servers) serveUDP(name string, pc *net.UDPConn) {
	buf := make([]byte, 512)
	for {
		_, from, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		s.count(name + "/udp")
		pc.WriteToUDPAddrPort([]byte(name), from)
	}
}

// setService writes a service with the given backends (names of
// backendIDs) into the maps, as the service reconciler would.
func (e *env) setService(vip netip.AddrPort, proto uint8, revNatID uint32, backends ...string) {
	e.t.Helper()
	e.setServiceIn(lbmap.ScopeExternal, vip, proto, revNatID, backends...)
}

// setServiceIn is setService for the entry set of scope.
func (e *env) setServiceIn(scope uint8, vip netip.AddrPort, proto uint8, revNatID uint32, backends ...string) {
	e.t.Helper()
	port := uint16(backendTCPPort)
	if proto == lbmap.ProtoUDP {
		port = backendUDPPort
	}
	var bids []uint32
	var bes []lbmap.Backend
	keys := []lbmap.ServiceKey{{Addr: lbmap.AddrFrom(vip.Addr()), Port: vip.Port(), Proto: proto, Scope: scope}}
	vals := []lbmap.ServiceValue{{Count: uint16(len(backends)), RevNatID: revNatID}}
	for i, name := range backends {
		id, ok := backendIDs[name]
		if !ok {
			e.t.Fatalf("unknown backend %q", name)
		}
		addr := backendAddrs[strings.TrimSuffix(strings.TrimSuffix(name, "-tcp"), "-udp")]
		bids = append(bids, id)
		bes = append(bes, lbmap.Backend{Addr: lbmap.AddrFrom(addr), Port: port, Proto: proto})
		k := keys[0]
		k.Slot = uint16(i + 1)
		keys = append(keys, k)
		vals = append(vals, lbmap.ServiceValue{BackendID: id})
	}
	if err := e.lb.Backends.Update(bids, bes); err != nil {
		e.t.Fatal(err)
	}
	if err := e.lb.RevNat.Update([]uint32{revNatID}, []lbmap.RevNat{{Addr: lbmap.AddrFrom(vip.Addr()), Port: vip.Port()}}); err != nil {
		e.t.Fatal(err)
	}
	if err := e.lb.Services.Update(keys, vals); err != nil {
		e.t.Fatal(err)
	}
}

// deleteService removes the service entry (slot 0) of vip.
func (e *env) deleteService(vip netip.AddrPort, proto uint8) {
	e.t.Helper()
	e.deleteServiceIn(lbmap.ScopeExternal, vip, proto)
}

// deleteServiceIn removes the service entry (slot 0) of vip in scope.
func (e *env) deleteServiceIn(scope uint8, vip netip.AddrPort, proto uint8) {
	e.t.Helper()
	key := lbmap.ServiceKey{Addr: lbmap.AddrFrom(vip.Addr()), Port: vip.Port(), Proto: proto, Scope: scope}
	if err := e.lb.Services.Delete([]lbmap.ServiceKey{key}); err != nil {
		e.t.Fatal(err)
	}
}

type metricValue struct {
	Packets uint64
	Bytes   uint64
}

// metric sums one counter of fp_metrics over all CPUs.
func (e *env) metric(idx uint32) uint64 {
	e.t.Helper()
	var vals []metricValue
	if err := e.objs.FpMetrics.Lookup(idx, &vals); err != nil {
		e.t.Fatalf("fp_metrics[%d]: %v", idx, err)
	}
	var sum uint64
	for _, v := range vals {
		sum += v.Packets
	}
	return sum
}

// helperEnv selects client mode in a re-executed test binary; nsEnv names
// the namespace the client enters.
const (
	helperEnv    = "FP_SOCKLB_HELPER_CLIENT"
	nsEnv        = "FP_SOCKLB_NETNS"
	resultPrefix = "FPRESULT "
)

// request and result are the line protocol between test and client.
type request struct {
	Op   string // tcp, peer, close, tcpmany, udp, udpconn, udphold, udpask
	Addr string
	N    int // tcpmany: how many connections
}

type result struct {
	Errno string // e.g. ECONNREFUSED; empty on success
	Err   string
	Body  string // the backend's name
	Peer  string // getpeername()
	From  string // source of the reply as recvfrom() reports it
}

// client is a re-executed test binary placed in a cgroup (or not) at birth
// and in the test namespace, so only its sockets meet the programs.
type client struct {
	t   *testing.T
	cmd *exec.Cmd
	in  io.WriteCloser
	raw io.Reader
	out *bufio.Scanner
}

// startClient starts a client in cgroupPath; "" leaves it in the test's own
// cgroup, outside the attached subtree.
func (e *env) startClient(cgroupPath string) *client {
	e.t.Helper()
	exe, err := os.Executable()
	if err != nil {
		e.t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestHelperClient$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"=1", nsEnv+"="+e.nsPath)
	cmd.Stderr = os.Stderr
	if cgroupPath != "" {
		// CLONE_INTO_CGROUP: the child never runs a moment outside it.
		dir, err := os.Open(cgroupPath)
		if err != nil {
			e.t.Fatal(err)
		}
		defer dir.Close()
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(dir.Fd())}
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		e.t.Fatalf("start client: %v", err)
	}
	c := &client{t: e.t, cmd: cmd, in: in, raw: out, out: bufio.NewScanner(out)}
	e.t.Cleanup(c.stop)
	return c
}

func (c *client) do(op, addr string) result {
	c.t.Helper()
	return c.doReq(request{Op: op, Addr: addr})
}

func (c *client) doReq(req request) result {
	c.t.Helper()
	op, addr := req.Op, req.Addr
	line, err := json.Marshal(req)
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := fmt.Fprintf(c.in, "%s\n", line); err != nil {
		c.t.Fatalf("client %s %s: %v", op, addr, err)
	}
	for c.out.Scan() {
		text, ok := strings.CutPrefix(c.out.Text(), resultPrefix)
		if !ok {
			continue // the test framework's own output
		}
		var r result
		if err := json.Unmarshal([]byte(text), &r); err != nil {
			c.t.Fatalf("client %s %s: bad result %q: %v", op, addr, text, err)
		}
		return r
	}
	c.t.Fatalf("client %s %s: exited without a result (%v)", op, addr, c.out.Err())
	return result{}
}

// stop closes the client's stdin, which ends it, and reaps it; a client
// that does not end is killed by its PID.
func (c *client) stop() {
	if c.cmd.ProcessState != nil {
		return
	}
	c.in.Close()
	done := make(chan struct{})
	go func() {
		io.Copy(io.Discard, c.raw)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
	}
	c.cmd.Wait()
}
