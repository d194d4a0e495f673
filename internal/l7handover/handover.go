// Package l7handover passes the L7 proxy's listening socket from a running
// agent to the next one (upgrade, restart with overlap) over a unix socket
// with SCM_RIGHTS, so the listener never closes: connections that arrive
// while neither proxy accepts wait in its backlog instead of having their
// SYNs dropped (docs/l7.md, "Restarts and upgrades").
//
// The protocol is one exchange per successor: the successor connects, the
// predecessor sends the listener's descriptor, the successor checks it (a
// listening TCP socket on the expected port in the expected network
// namespace) and answers "ok". Only then does the predecessor stop
// accepting: a successor that dies before answering costs nothing.
package l7handover

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fastpath-net/fastpath/internal/netnsrun"
)

// ErrNoPredecessor: nobody offers a listener at the path (first start, or
// the previous agent crashed and its listener closed with it).
var ErrNoPredecessor = errors.New("l7 hand-over: no running agent offers its listener")

const (
	msgListener = 'L' // predecessor -> successor, with the descriptor
	msgOK       = 'K' // successor -> predecessor: taken, stop accepting
)

// exchangeTimeout bounds each step of one exchange: both ends are local
// processes that answer at once, or are stuck.
const exchangeTimeout = 5 * time.Second

// Offer serves ln to successors on the unix socket at path until ctx ends
// or one successor took it; then it calls handedOver (once, only after a
// successful exchange) and returns. A stale socket file at path is
// replaced. The listener stays open in this process: the caller stops
// accepting on it and closes its own descriptor when done, which does not
// close the successor's.
func Offer(ctx context.Context, path string, ln *net.TCPListener, handedOver func()) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("l7 hand-over socket %s: %w", path, err)
	}
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return fmt.Errorf("l7 hand-over socket: %w", err)
	}
	// The file stays after a hand-over: the successor has put its own
	// offer at the same path by then.
	ul.SetUnlinkOnClose(false)
	taken := false
	defer func() {
		ul.Close()
		if !taken {
			os.Remove(path)
		}
	}()
	stop := context.AfterFunc(ctx, func() { ul.Close() })
	defer stop()
	for {
		c, err := ul.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("l7 hand-over socket %s: %w", path, err)
		}
		err = give(c, ln)
		c.Close()
		if err == nil {
			taken = true
			handedOver()
			return nil
		}
		// A successor that failed may try again; keep serving.
		if ctx.Err() != nil {
			return nil
		}
	}
}

func give(c *net.UnixConn, ln *net.TCPListener) error {
	f, err := ln.File() // a duplicate; closed once sent
	if err != nil {
		return err
	}
	defer f.Close()
	c.SetDeadline(time.Now().Add(exchangeTimeout))
	if _, _, err := c.WriteMsgUnix([]byte{msgListener}, unix.UnixRights(int(f.Fd())), nil); err != nil {
		return err
	}
	var b [1]byte
	if _, err := c.Read(b[:]); err != nil {
		return err
	}
	if b[0] != msgOK {
		return fmt.Errorf("l7 hand-over: successor answered %q", b[0])
	}
	return nil
}

// Take asks the agent offering at path for its listener and returns it
// once checked: a listening TCP socket on port whose network namespace is
// the one netnsCookie names (unix.SO_NETNS_COOKIE of a socket of ours
// there). ErrNoPredecessor when nobody offers.
func Take(path string, port uint16, netnsCookie uint64) (*net.TCPListener, error) {
	c, err := net.DialTimeout("unix", path, exchangeTimeout)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, ErrNoPredecessor
		}
		return nil, fmt.Errorf("l7 hand-over socket %s: %w", path, err)
	}
	uc := c.(*net.UnixConn)
	defer uc.Close()
	uc.SetDeadline(time.Now().Add(exchangeTimeout))
	b := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := uc.ReadMsgUnix(b, oob)
	if err != nil {
		return nil, fmt.Errorf("l7 hand-over: reading the listener from %s: %w", path, err)
	}
	fd, err := oneFD(oob[:oobn])
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "l7-proxy-listener")
	defer f.Close() // FileListener keeps a duplicate
	if n != 1 || b[0] != msgListener {
		return nil, fmt.Errorf("l7 hand-over: unexpected message %q from %s", b[:n], path)
	}
	if err := check(fd, port, netnsCookie); err != nil {
		return nil, err
	}
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("l7 hand-over: %w", err)
	}
	tl, ok := l.(*net.TCPListener)
	if !ok {
		l.Close()
		return nil, fmt.Errorf("l7 hand-over: received a %T, want a TCP listener", l)
	}
	if _, err := uc.Write([]byte{msgOK}); err != nil {
		tl.Close()
		return nil, fmt.Errorf("l7 hand-over: confirming to %s: %w", path, err)
	}
	return tl, nil
}

func oneFD(oob []byte) (int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return -1, fmt.Errorf("l7 hand-over: control message: %w", err)
	}
	var fds []int
	for _, m := range msgs {
		r, err := unix.ParseUnixRights(&m)
		if err == nil {
			fds = append(fds, r...)
		}
	}
	if len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return -1, fmt.Errorf("l7 hand-over: got %d descriptors, want 1", len(fds))
	}
	return fds[0], nil
}

// check refuses a socket that is not the listener this agent would open:
// another node's (agents sharing a path by mistake) or another port's.
func check(fd int, port uint16, netnsCookie uint64) error {
	if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || v != 1 {
		return fmt.Errorf("l7 hand-over: the received socket is not listening (%v)", err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fmt.Errorf("l7 hand-over: %w", err)
	}
	in4, ok := sa.(*unix.SockaddrInet4)
	if !ok || in4.Port != int(port) {
		return fmt.Errorf("l7 hand-over: the received listener is bound to %v, want port %d (--l7-proxy-port changed?)", sockaddrString(sa), port)
	}
	got, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		return fmt.Errorf("l7 hand-over: the listener's network namespace: %w", err)
	}
	if got != netnsCookie {
		return fmt.Errorf("l7 hand-over: the received listener belongs to another network namespace (another node's agent on the same --l7-handover-socket?)")
	}
	return nil
}

func sockaddrString(sa unix.Sockaddr) string {
	if in4, ok := sa.(*unix.SockaddrInet4); ok {
		return fmt.Sprintf("%v:%d", net.IP(in4.Addr[:]), in4.Port)
	}
	return fmt.Sprintf("%T", sa)
}

// NetNSCookie names the network namespace at nsPath ("" = the caller's)
// as Take compares it: SO_NETNS_COOKIE of a socket opened there.
func NetNSCookie(nsPath string) (uint64, error) {
	var cookie uint64
	err := netnsrun.Do(nsPath, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		cookie, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("l7 hand-over: network namespace cookie of %q: %w", nsPath, err)
	}
	return cookie, nil
}
