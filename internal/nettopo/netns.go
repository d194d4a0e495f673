// Package nettopo builds small networks of fp- network namespaces joined by
// veth pairs: the hosts, nodes and routers of datapath tests and the lab.
// Nothing here touches the root network namespace except to create and
// delete the namespaces themselves.
package nettopo

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Prefix starts the name of every namespace this package creates, so that
// leftovers are easy to recognise and never collide with the machine's own.
const Prefix = "fp-"

// NS is a named network namespace (visible in `ip netns list`).
type NS struct {
	Name   string
	handle netns.NsHandle
	nl     *netlink.Handle
}

// NewNS creates the namespace /run/netns/name with loopback up.
// name must start with Prefix.
func NewNS(name string) (*NS, error) {
	if !strings.HasPrefix(name, Prefix) {
		return nil, fmt.Errorf("netns %q: name must start with %q", name, Prefix)
	}
	h, err := newNamed(name)
	if err != nil {
		return nil, fmt.Errorf("netns %s: create: %w", name, err)
	}
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		h.Close()
		_ = netns.DeleteNamed(name)
		return nil, fmt.Errorf("netns %s: netlink handle: %w", name, err)
	}
	ns := &NS{Name: name, handle: h, nl: nl}
	if err := ns.LinkUp("lo"); err != nil {
		ns.Delete()
		return nil, err
	}
	return ns, nil
}

// newNamed creates the namespace on a locked thread and puts the thread back
// in its original namespace, because netns.NewNamed switches the caller.
func newNamed(name string) (netns.NsHandle, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return 0, err
	}
	defer orig.Close()
	h, err := netns.NewNamed(name)
	if serr := netns.Set(orig); serr != nil {
		// The thread is stuck in the wrong namespace: never let the runtime
		// reuse it. Exiting the goroutine with the thread locked kills it.
		panic(fmt.Sprintf("netns %s: cannot restore thread namespace: %v", name, serr))
	}
	return h, err
}

// Path is the bind-mount path of the namespace, for tools and nsenter.
func (n *NS) Path() string { return filepath.Join("/run/netns", n.Name) }

// Handle returns the namespace handle, valid until Delete.
func (n *NS) Handle() netns.NsHandle { return n.handle }

// Netlink returns a netlink handle bound to the namespace.
func (n *NS) Netlink() *netlink.Handle { return n.nl }

// Delete removes the namespace; the interfaces inside it go with it.
func (n *NS) Delete() error {
	n.Release()
	return DeleteNS(n.Name)
}

// DeleteNS removes a namespace by name; a missing one is not an error. Only
// names with Prefix are accepted, so a typo cannot remove a foreign one.
func DeleteNS(name string) error {
	if !strings.HasPrefix(name, Prefix) {
		return fmt.Errorf("netns %q: refusing to delete a namespace without the %q prefix", name, Prefix)
	}
	if err := netns.DeleteNamed(name); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("netns %s: delete: %w", name, err)
	}
	return nil
}

// Do runs fn on an OS thread that has entered the namespace. Sockets created
// inside fn stay in the namespace after it returns.
func (n *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the thread ends with this goroutine, so a
		// thread left in another namespace is never reused by the runtime.
		if err := netns.Set(n.handle); err != nil {
			errc <- fmt.Errorf("netns %s: enter: %w", n.Name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Listen opens a listener inside the namespace.
func (n *NS) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := n.Do(func() (err error) {
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// ListenPacket opens a packet socket inside the namespace.
func (n *NS) ListenPacket(network, addr string) (net.PacketConn, error) {
	var c net.PacketConn
	err := n.Do(func() (err error) {
		c, err = net.ListenPacket(network, addr)
		return err
	})
	return c, err
}

// Sysctl writes a per-namespace sysctl such as net/ipv4/ip_forward. The
// /proc/sys/net tree shows the namespace of the thread that opens it.
func (n *NS) Sysctl(key, value string) error {
	return n.Do(func() error {
		p := filepath.Join("/proc/sys", key)
		if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
			return fmt.Errorf("netns %s: sysctl %s=%s: %w", n.Name, key, value, err)
		}
		return nil
	})
}

// OpenNS opens an existing namespace created earlier, e.g. by another process.
func OpenNS(name string) (*NS, error) {
	h, err := netns.GetFromName(name)
	if err != nil {
		return nil, fmt.Errorf("netns %s: open: %w", name, err)
	}
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("netns %s: netlink handle: %w", name, err)
	}
	return &NS{Name: name, handle: h, nl: nl}, nil
}

// Release closes the handles without deleting the namespace.
func (n *NS) Release() {
	if n.nl != nil {
		n.nl.Close()
		n.nl = nil
	}
	if n.handle.IsOpen() {
		n.handle.Close()
	}
}

// Start starts cmd with the namespace as its network namespace (and nothing
// else changed: the mount namespace stays, so /sys/fs/bpf stays visible,
// unlike under `ip netns exec`). The child is forked from a thread inside
// the namespace, which ends with Do.
func (n *NS) Start(cmd *exec.Cmd) error {
	return n.Do(cmd.Start)
}
