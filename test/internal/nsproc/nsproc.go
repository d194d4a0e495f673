// Package nsproc starts long-running processes inside a network namespace
// (a proxy under test, iptables-save) from an OS thread that entered it, and
// ends them by process group. The conformance test and the control-path
// benchmark share it.
package nsproc

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
)

// Thread is a goroutine locked to an OS thread that entered a network
// namespace and stays there until Close. Processes forked from it start
// inside the namespace, and their Pdeathsig is tied to this thread, which
// lives exactly as long as they should: they die with the calling process
// even if cleanup never runs.
type Thread struct {
	work chan func()
	done chan struct{}
}

// NewThread starts a thread inside ns.
func NewThread(ns *nettopo.NS) (*Thread, error) {
	return newThread(func() error {
		if err := netns.Set(ns.Handle()); err != nil {
			return fmt.Errorf("enter netns %s: %w", ns.Name, err)
		}
		return nil
	})
}

// NewRootThread starts a thread in the caller's own namespace, for
// processes that should run there with the same Pdeathsig guarantee.
func NewRootThread() (*Thread, error) { return newThread(func() error { return nil }) }

func newThread(enter func() error) (*Thread, error) {
	t := &Thread{work: make(chan func()), done: make(chan struct{})}
	ready := make(chan error, 1)
	go func() {
		defer close(t.done)
		runtime.LockOSThread()
		// Never unlocked: when this goroutine returns the runtime ends the
		// thread, so a thread in another namespace is never reused.
		if err := enter(); err != nil {
			ready <- err
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

// Do runs f on the thread and waits for it.
func (t *Thread) Do(f func()) {
	fin := make(chan struct{})
	t.work <- func() { f(); close(fin) }
	<-fin
}

// Close ends the thread; the processes it started get their Pdeathsig.
func (t *Thread) Close() {
	close(t.work)
	<-t.done
}

// Run runs a short command inside the namespace and returns its stdout.
func (t *Thread) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var err error
	t.Do(func() { err = cmd.Start() })
	if err == nil {
		err = cmd.Wait()
	}
	if err != nil {
		return out.Bytes(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, errb.String())
	}
	return out.Bytes(), nil
}

// Child is a long-running process started on a Thread, logging to a file.
type Child struct {
	Name    string
	LogPath string
	Started time.Time // just before the fork
	cmd     *exec.Cmd
	exited  chan struct{}
	err     error
}

// Start runs bin in its own process group with its output in
// dir/<name>.log.
func (t *Thread) Start(dir, name, bin string, args []string) (*Child, error) {
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
	c := &Child{Name: name, LogPath: logPath, cmd: cmd, exited: make(chan struct{})}
	t.Do(func() {
		c.Started = time.Now()
		err = cmd.Start()
	})
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { c.err = cmd.Wait(); close(c.exited) }()
	return c, nil
}

// StartRoot starts a process in the caller's own (root) network namespace,
// from a locked thread kept for it, for the same Pdeathsig reason.
func StartRoot(dir, name, bin string, args []string) (*Child, *Thread, error) {
	t, err := NewRootThread()
	if err != nil {
		return nil, nil, err
	}
	c, err := t.Start(dir, name, bin, args)
	if err != nil {
		t.Close()
		return nil, nil, err
	}
	return c, t, nil
}

// PID is the child's process ID.
func (c *Child) PID() int { return c.cmd.Process.Pid }

// Stop sends SIGTERM to the child's process group, then SIGKILL after grace.
func (c *Child) Stop(grace time.Duration) {
	select {
	case <-c.exited:
		return
	default:
	}
	_ = syscall.Kill(-c.PID(), syscall.SIGTERM)
	// A paused child acts on the SIGTERM only once it runs again.
	_ = syscall.Kill(-c.PID(), syscall.SIGCONT)
	select {
	case <-c.exited:
	case <-time.After(grace):
		_ = syscall.Kill(-c.PID(), syscall.SIGKILL)
		<-c.exited
	}
}

// Pause stops the child's process group (SIGSTOP) until Resume or Stop:
// a benchmark keeps a proxy's programming in place without its process
// reacting to what the apiserver tells it meanwhile.
func (c *Child) Pause() error { return c.signal(syscall.SIGSTOP) }

// Resume continues a paused child.
func (c *Child) Resume() error { return c.signal(syscall.SIGCONT) }

func (c *Child) signal(sig syscall.Signal) error {
	if err := c.Running(); err != nil {
		return err
	}
	return syscall.Kill(-c.PID(), sig)
}

// Running returns nil while the child runs, else how it ended.
func (c *Child) Running() error {
	select {
	case <-c.exited:
		return fmt.Errorf("%s exited: %v", c.Name, c.err)
	default:
		return nil
	}
}

// Log is the child's whole log so far.
func (c *Child) Log() string {
	data, err := os.ReadFile(c.LogPath)
	if err != nil {
		return err.Error()
	}
	return string(data)
}

// Tail is the last lines of the child's log.
func (c *Child) Tail(lines int) string {
	all := strings.Split(strings.TrimRight(c.Log(), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// SameNetns reports whether process pid runs in the namespace ns.
func SameNetns(pid int, ns *nettopo.NS) (bool, error) {
	var a, b syscall.Stat_t
	if err := syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &a); err != nil {
		return false, err
	}
	if err := syscall.Stat(ns.Path(), &b); err != nil {
		return false, err
	}
	return a.Ino == b.Ino && a.Dev == b.Dev, nil
}
