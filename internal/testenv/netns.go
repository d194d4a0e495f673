package testenv

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

const (
	netnsDir    = "/run/netns"
	netnsPrefix = "fp-cp-"
)

// nsThread is one goroutine locked to an OS thread that lives in the env's
// network namespace for the env's whole life. Everything that must happen
// inside the namespace runs on it:
//   - creating the namespace itself (unshare on this thread), so the rest of
//     the process never changes namespace;
//   - forking the children: they inherit the thread's netns, and their
//     Pdeathsig is tied to this thread, which no other goroutine can use and
//     which exits only after Stop has killed them;
//   - opening sockets to the apiserver for the forwarder.
//
// When the work channel closes the goroutine returns still locked, so the Go
// runtime destroys the thread instead of reusing one that sits in another
// namespace.
type nsThread struct {
	name string
	// joined: the namespace existed before (a detached env's); the thread
	// enters it instead of creating it, and close leaves it.
	joined bool
	work   chan func()
	done   chan struct{}
}

func newNSThread(name string, join bool) (*nsThread, error) {
	t := &nsThread{name: name, joined: join, work: make(chan func()), done: make(chan struct{})}
	ready := make(chan error, 1)
	go t.loop(ready)
	if err := <-ready; err != nil {
		return nil, err
	}
	return t, nil
}

func (t *nsThread) loop(ready chan<- error) {
	defer close(t.done)
	runtime.LockOSThread()
	if t.joined {
		ns, err := netns.GetFromName(t.name)
		if err == nil {
			err = netns.Set(ns)
			ns.Close()
		}
		if err != nil {
			ready <- fmt.Errorf("netns %s: %w", t.name, err)
			return
		}
		t.serve(ready)
		return
	}
	ns, err := netns.NewNamed(t.name)
	if err == nil {
		ns.Close()
		err = setupLoopback()
	}
	if err != nil {
		// NewNamed may stop half way, leaving the file or the mount; a name
		// that already existed is not ours to remove.
		if !errors.Is(err, fs.ErrExist) {
			_ = deleteNetns(t.name)
		}
		ready <- fmt.Errorf("netns %s: %w", t.name, err)
		return
	}
	t.serve(ready)
}

func (t *nsThread) serve(ready chan<- error) {
	ready <- nil
	for f := range t.work {
		f()
	}
}

// setupLoopback brings lo up; it runs on the namespace thread, where
// netlink's package-level functions open their sockets.
func setupLoopback() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("netns lo: %w", err)
	}
	return netlink.LinkSetUp(lo)
}

// do runs f on the namespace thread and waits for it.
func (t *nsThread) do(f func()) {
	finished := make(chan struct{})
	t.work <- func() { f(); close(finished) }
	<-finished
}

// addLoopbackAddr adds ip/32 to the namespace's lo, so the apiserver can
// advertise a non-loopback address (Endpoints reject 127.0.0.0/8).
func (t *nsThread) addLoopbackAddr(ip net.IP) (err error) {
	t.do(func() {
		var lo netlink.Link
		if lo, err = netlink.LinkByName("lo"); err != nil {
			return
		}
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: net.CIDRMask(32, 32)}}
		err = netlink.AddrAdd(lo, addr)
	})
	return err
}

func (t *nsThread) dial(addr string) (c net.Conn, err error) {
	t.do(func() { c, err = net.DialTimeout("tcp", addr, 2*time.Second) })
	return c, err
}

func (t *nsThread) close() error {
	close(t.work)
	<-t.done
	if t.joined {
		return nil
	}
	return deleteNetns(t.name)
}

func deleteNetns(name string) error {
	err := netns.DeleteNamed(name)
	if errors.Is(err, syscall.EINVAL) || errors.Is(err, os.ErrNotExist) {
		// Not mounted: NewNamed failed half way; only the file may be left.
		err = os.Remove(filepath.Join(netnsDir, name))
		if errors.Is(err, os.ErrNotExist) {
			err = nil
		}
	}
	return err
}

// envName embeds our PID so a later run can tell which leftovers belong to a
// process that died without calling Stop (its children died with it through
// Pdeathsig; only the netns mount and the directory remain).
func envName() string {
	return fmt.Sprintf("%s%d-%s", netnsPrefix, os.Getpid(), randomHex(4))
}

// ownerAlive reports whether the process that created the named leftover
// still runs; names it cannot parse count as alive, so they are left alone.
func ownerAlive(name string) bool {
	rest, ok := strings.CutPrefix(name, netnsPrefix)
	if !ok {
		return true
	}
	pidStr, _, _ := strings.Cut(rest, "-")
	pid, err := strconv.Atoi(pidStr)
	if err != nil {
		return true
	}
	return syscall.Kill(pid, 0) != syscall.ESRCH
}

// collectLeftovers removes netns mounts and env dirs of dead owners.
func collectLeftovers(dirParent string) {
	if entries, err := os.ReadDir(netnsDir); err == nil {
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), netnsPrefix) && !ownerAlive(e.Name()) {
				_ = deleteNetns(e.Name())
			}
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(dirParent, netnsPrefix+"*"))
	for _, d := range dirs {
		if !ownerAlive(filepath.Base(d)) {
			_ = os.RemoveAll(d)
		}
	}
}
