// Package l7handover passes the L7 proxy's listening socket from a running
// agent to the next one (upgrade, restart with overlap) over a unix socket
// with SCM_RIGHTS, so the listener never closes: connections that arrive
// while neither proxy accepts wait in its backlog instead of having their
// SYNs dropped (docs/l7.md, "Restarts and upgrades").
//
// The protocol, one connection per successor: the successor connects as
// soon as it starts, which tells the predecessor a successor is waiting
// (Offer.Waiting: a predecessor told to stop keeps serving until the
// successor is ready, instead of closing the listener under it). Once its
// rules are programmed the successor sends "T"; the predecessor sends the
// listener's descriptor; the successor checks it (a listening TCP socket
// on the expected port in the expected network namespace) and answers
// "K". Only then does the predecessor stop accepting: a successor that
// dies or refuses costs nothing.
package l7handover

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fastpath-net/fastpath/internal/netnsrun"
)

// ErrNoPredecessor: nobody offers a listener at the path (first start, or
// the previous agent crashed or is stopping without a successor).
var ErrNoPredecessor = errors.New("l7 hand-over: no running agent offers its listener")

const (
	msgTake     = 'T' // successor -> predecessor: ready, send it
	msgListener = 'L' // predecessor -> successor, with the descriptor
	msgOK       = 'K' // successor -> predecessor: taken, stop accepting
)

// exchangeTimeout bounds each step once the successor asked: both ends
// are local processes that answer at once, or are stuck.
const exchangeTimeout = 5 * time.Second

// Offer offers a listener to successors on a unix socket.
type Offer struct {
	// OnSuccessor, when set before Serve, is called as a successor
	// connects (it waits for its rules before taking the listener).
	OnSuccessor func()

	ln      *net.TCPListener
	ul      *net.UnixListener
	path    string
	waiting atomic.Int32
	once    sync.Once     // the one successful hand-over
	mu      sync.Mutex    // one exchange at a time
	done    chan struct{} // closed by the hand-over
	stop    chan struct{} // closed by Close
	closing sync.Once
}

// NewOffer listens at path (a stale socket file there is replaced) to
// offer ln; Serve answers successors.
func NewOffer(path string, ln *net.TCPListener) (*Offer, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("l7 hand-over socket %s: %w", path, err)
	}
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("l7 hand-over socket: %w", err)
	}
	// Removed only by Close without a hand-over: after one, the path is
	// the successor's own offer.
	ul.SetUnlinkOnClose(false)
	return &Offer{ln: ln, ul: ul, path: path, done: make(chan struct{}), stop: make(chan struct{})}, nil
}

// Serve answers successors until Close. The listener stays open in this
// process after a hand-over: the caller stops accepting on it and closes
// its own descriptor when done, which does not close the successor's.
func (o *Offer) Serve() error {
	for {
		c, err := o.ul.AcceptUnix()
		if err != nil {
			select {
			case <-o.stop:
				return nil
			default:
			}
			return fmt.Errorf("l7 hand-over socket %s: %w", o.path, err)
		}
		go o.answer(c)
	}
}

// Done is closed once a successor took the listener.
func (o *Offer) Done() <-chan struct{} { return o.done }

// Waiting reports whether a successor is connected and waiting for its
// rules before it takes the listener.
func (o *Offer) Waiting() bool { return o.waiting.Load() > 0 }

// Close stops offering; the socket file goes unless a successor took the
// listener (its own offer is there by then).
func (o *Offer) Close() {
	o.closing.Do(func() {
		close(o.stop)
		o.ul.Close()
		o.mu.Lock() // an exchange under way decides whether the file is ours
		defer o.mu.Unlock()
		select {
		case <-o.done:
		default:
			os.Remove(o.path)
		}
	})
}

func (o *Offer) answer(c *net.UnixConn) {
	defer c.Close()
	o.waiting.Add(1)
	defer o.waiting.Add(-1)
	if o.OnSuccessor != nil {
		o.OnSuccessor()
	}
	finished := make(chan struct{})
	defer close(finished)
	go func() { // a waiting successor's connection closes with the offer
		select {
		case <-o.stop:
			c.Close()
		case <-finished:
		}
	}()
	var b [1]byte
	if _, err := c.Read(b[:]); err != nil || b[0] != msgTake {
		return // gone before it was ready
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	select {
	case <-o.done: // another successor was first
		return
	case <-o.stop:
		// Closed while the successor waited: the watcher above closes c,
		// but the successor's ask may be read before it does, and a
		// stopped offer must not give its listener away.
		return
	default:
	}
	if give(c, o.ln) == nil {
		o.once.Do(func() { close(o.done) })
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

// Take connects to the agent offering at path at once (so that it knows a
// successor waits), waits for ready or ctx, then takes its listener and
// returns it once checked: a listening TCP socket on port whose network
// namespace is the one netnsCookie names (NetNSCookie). ErrNoPredecessor
// when nobody offers.
func Take(ctx context.Context, path string, port uint16, netnsCookie uint64, ready <-chan struct{}) (*net.TCPListener, error) {
	c, err := net.DialTimeout("unix", path, exchangeTimeout)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, ErrNoPredecessor
		}
		return nil, fmt.Errorf("l7 hand-over socket %s: %w", path, err)
	}
	uc := c.(*net.UnixConn)
	defer uc.Close()
	select {
	case <-ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	uc.SetDeadline(time.Now().Add(exchangeTimeout))
	if _, err := uc.Write([]byte{msgTake}); err != nil {
		return nil, fmt.Errorf("l7 hand-over: asking %s: %w", path, err)
	}
	b := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := uc.ReadMsgUnix(b, oob)
	if err != nil {
		return nil, fmt.Errorf("l7 hand-over: reading the listener from %s: %w", path, err)
	}
	if n == 0 {
		return nil, fmt.Errorf("l7 hand-over: %s closed before sending the listener (its agent stopped?)", path)
	}
	fd, err := oneFD(oob[:oobn])
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "l7-proxy-listener")
	defer f.Close() // FileListener keeps a duplicate
	if b[0] != msgListener {
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
