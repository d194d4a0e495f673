// Package socklb attaches the socket load balancer (bpf/sock_lb.c) to a
// cgroup v2 subtree and keeps its links pinned, so the programs stay attached
// while the agent restarts and a new agent swaps its programs in atomically.
package socklb

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfobj"
)

type hook struct {
	name   string // pin file name: the program's name
	attach ebpf.AttachType
	prog   func(*bpfobj.SocklbPrograms) *ebpf.Program
}

// hooks in attach order: the reverse translations go first, so that at no
// moment can a socket be sent to a backend whose replies would not be
// translated back, then the release hook that deletes a connected socket's
// reverse-translation entry, so that no connect() writes one that nothing
// deletes. Detach walks the list backwards for the same reasons.
var hooks = []hook{
	{"fp_sock_recvmsg4", ebpf.AttachCGroupUDP4Recvmsg,
		func(p *bpfobj.SocklbPrograms) *ebpf.Program { return p.FpSockRecvmsg4 }},
	{"fp_sock_getpeername4", ebpf.AttachCgroupInet4GetPeername,
		func(p *bpfobj.SocklbPrograms) *ebpf.Program { return p.FpSockGetpeername4 }},
	{"fp_sock_release", ebpf.AttachCgroupInetSockRelease,
		func(p *bpfobj.SocklbPrograms) *ebpf.Program { return p.FpSockRelease }},
	{"fp_sock_sendmsg4", ebpf.AttachCGroupUDP4Sendmsg,
		func(p *bpfobj.SocklbPrograms) *ebpf.Program { return p.FpSockSendmsg4 }},
	{"fp_sock_connect4", ebpf.AttachCGroupInet4Connect,
		func(p *bpfobj.SocklbPrograms) *ebpf.Program { return p.FpSockConnect4 }},
}

// PinNames are the file names Attach pins under its pin directory.
func PinNames() []string {
	names := make([]string, len(hooks))
	for i, h := range hooks {
		names[i] = h.name
	}
	return names
}

// Attach attaches the five socket-LB programs of objs to the cgroup v2
// directory cgroupPath and pins their links in pinDir (created if missing;
// one pinDir per cgroup).
//
// A link already pinned in pinDir for the same cgroup and hook is updated in
// place to the new program, so the hook never runs without a program. A
// pinned link for another cgroup (or a defunct one, whose cgroup was removed)
// is replaced: the new link is attached and its pin swapped in before the old
// link is detached.
//
// On error the hooks before the failing one stay attached; since reverse
// hooks come first, that partial state never translates a socket one way
// only. Call Attach again or Detach.
func Attach(objs *bpfobj.SocklbObjects, cgroupPath, pinDir string) error {
	if objs == nil {
		return errors.New("socklb attach: objects are nil")
	}
	cgID, err := cgroupID(cgroupPath)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(pinDir, 0o700); err != nil {
		return fmt.Errorf("socklb attach: pin dir %s: %w", pinDir, err)
	}
	for _, h := range hooks {
		prog := h.prog(&objs.SocklbPrograms)
		if prog == nil {
			return fmt.Errorf("socklb attach: program %s is not loaded", h.name)
		}
		if err := attachOne(h, prog, cgroupPath, cgID, filepath.Join(pinDir, h.name)); err != nil {
			return fmt.Errorf("socklb attach %s to %s: %w", h.name, cgroupPath, err)
		}
	}
	return nil
}

func attachOne(h hook, prog *ebpf.Program, cgroupPath string, cgID uint64, pin string) error {
	old, err := link.LoadPinnedLink(pin, nil)
	if errors.Is(err, os.ErrNotExist) {
		return attachNew(h, prog, cgroupPath, pin)
	}
	if err != nil {
		// Something else sits at our pin path: do not guess what it is.
		return fmt.Errorf("pinned link %s: %w", pin, err)
	}
	defer old.Close()

	if sameHook(old, h, cgID) {
		err := old.Update(prog)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.ENOLINK) {
			return fmt.Errorf("update pinned link %s: %w", pin, err)
		}
		// ENOLINK: the link's cgroup is gone. Fall through and replace it.
	}
	if err := replace(h, prog, cgroupPath, pin); err != nil {
		return err
	}
	// The old link may still be held by another process: detach it so it
	// stops acting on its old cgroup now, not when the last holder exits.
	if err := old.Detach(); err != nil && !errors.Is(err, unix.ENOLINK) {
		return fmt.Errorf("detach replaced link: %w", err)
	}
	return nil
}

// sameHook reports whether l is a live cgroup link for hook h on cgroup cgID.
func sameHook(l link.Link, h hook, cgID uint64) bool {
	info, err := l.Info()
	if err != nil {
		return false
	}
	cg := info.Cgroup()
	return cg != nil && cg.CgroupId == cgID && ebpf.AttachType(cg.AttachType) == h.attach
}

func attachNew(h hook, prog *ebpf.Program, cgroupPath, pin string) error {
	l, err := link.AttachCgroup(link.CgroupOptions{Path: cgroupPath, Attach: h.attach, Program: prog})
	if err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	defer l.Close()
	if err := l.Pin(pin); err != nil {
		// Unpinned, the link would vanish with this process: undo it.
		return errors.Join(fmt.Errorf("pin link at %s: %w", pin, err), l.Detach())
	}
	return nil
}

// replace attaches a new link and moves its pin over the old one with
// rename(2), so the pin path always names a link.
func replace(h hook, prog *ebpf.Program, cgroupPath, pin string) error {
	tmp := pin + "_new" // bpffs refuses names with a dot
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove leftover %s: %w", tmp, err)
	}
	if err := attachNew(h, prog, cgroupPath, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, pin); err != nil {
		l, lerr := link.LoadPinnedLink(tmp, nil)
		if lerr == nil {
			_ = l.Detach()
			_ = l.Unpin()
			l.Close()
		}
		return fmt.Errorf("move pin %s to %s: %w", tmp, pin, err)
	}
	return nil
}

// Detach detaches the links pinned in pinDir by Attach and removes their
// pins. Links that are not pinned there are not an error. pinDir itself is
// left in place.
func Detach(pinDir string) error {
	var errs []error
	for i := len(hooks) - 1; i >= 0; i-- {
		if err := detachOne(filepath.Join(pinDir, hooks[i].name)); err != nil {
			errs = append(errs, fmt.Errorf("socklb detach %s: %w", hooks[i].name, err))
		}
	}
	return errors.Join(errs...)
}

func detachOne(pin string) error {
	l, err := link.LoadPinnedLink(pin, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("pinned link %s: %w", pin, err)
	}
	defer l.Close()
	// Detach first: another process may hold the link open.
	if err := l.Detach(); err != nil && !errors.Is(err, unix.ENOLINK) {
		return err
	}
	return l.Unpin()
}

// cgroupID returns the id the kernel reports for the cgroup v2 directory
// path: on cgroup2 it is the directory's inode number.
func cgroupID(path string) (uint64, error) {
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		return 0, fmt.Errorf("socklb: cgroup %s: %w", path, err)
	}
	if fs.Type != unix.CGROUP2_SUPER_MAGIC {
		return 0, fmt.Errorf("socklb: cgroup %s is not on a cgroup v2 filesystem", path)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("socklb: cgroup %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return 0, fmt.Errorf("socklb: cgroup %s is not a directory", path)
	}
	return st.Ino, nil
}
