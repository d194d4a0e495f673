package conformance

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netns"

	"github.com/fastpath-net/fastpath/internal/nettopo"
	"github.com/fastpath-net/fastpath/internal/testenv"
)

// Proxy is one contender: something that turns Services and EndpointSlices
// into a node's datapath. The kube-proxy side and the fastpath side both
// implement it; the cases know nothing else about them.
type Proxy interface {
	// Name is the subtest name: "kube-proxy" or "fastpath".
	Name() string
	// Start runs the proxy for topo's node, fed by env's apiserver as the
	// Node nodeName, and returns once it runs (not once it has synced).
	Start(ctx context.Context, env *testenv.Env, topo *Topology, dir string) error
	// HasMarker reports whether the proxy has programmed the marker
	// frontend vip:port/TCP with exactly the backend markerIP:port. The
	// harness bumps the marker after every change of a case, so a proxy
	// showing the new marker has handled every change made before it.
	HasMarker(vip string, port int) (bool, error)
	// Frontends lists every programmed frontend as "addr:port/PROTO",
	// for cases that check what is (not) programmed.
	Frontends() ([]string, error)
	// Logs is the tail of the proxy's log, for failures.
	Logs() string
	// Stop ends the proxy and removes what it left outside topo's
	// namespaces. Safe to call twice.
	Stop() error
}

// nodeThread is a goroutine locked to an OS thread that entered a node's
// network namespace and stays there until close. Processes forked from it
// start inside the namespace (kube-proxy, iptables-save), and their
// Pdeathsig is tied to this thread, which lives exactly as long as they
// should: they die with the test process even if cleanup never runs.
type nodeThread struct {
	work chan func()
	done chan struct{}
}

func newNodeThread(ns *nettopo.NS) (*nodeThread, error) {
	t := &nodeThread{work: make(chan func()), done: make(chan struct{})}
	ready := make(chan error, 1)
	go func() {
		defer close(t.done)
		runtime.LockOSThread()
		// Never unlocked: when this goroutine returns the runtime ends the
		// thread, so a thread in the node's namespace is never reused.
		if err := netns.Set(ns.Handle()); err != nil {
			ready <- fmt.Errorf("enter netns %s: %w", ns.Name, err)
			return
		}
		ready <- nil
		for f := range t.work {
			f()
		}
	}()
	if err := <-ready; err != nil {
		return nil, err
	}
	return t, nil
}

func (t *nodeThread) do(f func()) {
	fin := make(chan struct{})
	t.work <- func() { f(); close(fin) }
	<-fin
}

func (t *nodeThread) close() {
	close(t.work)
	<-t.done
}

// run runs a short command inside the namespace and returns its stdout.
func (t *nodeThread) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var err error
	t.do(func() { err = cmd.Start() })
	if err == nil {
		err = cmd.Wait()
	}
	if err != nil {
		return out.Bytes(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, errb.String())
	}
	return out.Bytes(), nil
}

// child is a long-running process started on a nodeThread.
type child struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
	err     error
}

func (t *nodeThread) start(dir, name, bin string, args []string) (*child, error) {
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so Stop ends it and anything it forked, and
	// nothing else.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	t.do(func() { err = cmd.Start() })
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() { c.err = cmd.Wait(); close(c.exited) }()
	return c, nil
}

// startRoot starts a process in the test's own (root) network namespace,
// from a locked thread kept for it, for the same Pdeathsig reason.
func startRoot(dir, name, bin string, args []string) (*child, *nodeThread, error) {
	t := &nodeThread{work: make(chan func()), done: make(chan struct{})}
	go func() {
		defer close(t.done)
		runtime.LockOSThread()
		for f := range t.work {
			f()
		}
	}()
	c, err := t.start(dir, name, bin, args)
	if err != nil {
		t.close()
		return nil, nil, err
	}
	return c, t, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// stop sends SIGTERM to the child's process group, then SIGKILL after grace.
func (c *child) stop(grace time.Duration) {
	select {
	case <-c.exited:
		return
	default:
	}
	_ = syscall.Kill(-c.pid(), syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(grace):
		_ = syscall.Kill(-c.pid(), syscall.SIGKILL)
		<-c.exited
	}
}

func (c *child) running() error {
	select {
	case <-c.exited:
		return fmt.Errorf("%s exited: %v", c.name, c.err)
	default:
		return nil
	}
}

func (c *child) tail(lines int) string {
	data, err := os.ReadFile(c.logPath)
	if err != nil {
		return err.Error()
	}
	all := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// sameNetns reports whether process pid runs in the namespace ns.
func sameNetns(pid int, ns *nettopo.NS) (bool, error) {
	var a, b syscall.Stat_t
	if err := syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &a); err != nil {
		return false, err
	}
	if err := syscall.Stat(ns.Path(), &b); err != nil {
		return false, err
	}
	return a.Ino == b.Ino && a.Dev == b.Dev, nil
}
