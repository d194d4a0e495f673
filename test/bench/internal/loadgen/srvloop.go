package loadgen

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// serverMain is the server child's main: T event-loop threads (T = the CPUs
// this process may run on), each locked to its OS thread with an epoll
// instance of its own in which every listener sits with EPOLLEXCLUSIVE, so
// one thread wakes per new connection. A thread accepts until EAGAIN, reads
// each new connection at once (the request is often there already), and
// only adds it to its epoll if it has to wait. Connections stay on the
// thread that accepted them; their state is a slice indexed by fd, so a
// connection allocates nothing. No goroutine per connection, no net package.
func serverMain() int {
	var names []string
	if err := json.Unmarshal([]byte(os.Getenv(serverNamesEnv)), &names); err != nil || len(names) == 0 {
		fmt.Fprintf(os.Stderr, "server: listener names %q: %v\n", os.Getenv(serverNamesEnv), err)
		return 1
	}
	replies := make([][ReplySize]byte, len(names))
	for i, name := range names {
		if err := checkName(name); err != nil {
			fmt.Fprintln(os.Stderr, "server:", err)
			return 1
		}
		copy(replies[i][:], name+"\n")
		fd := firstListenFd + i
		if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || v != 1 {
			fmt.Fprintf(os.Stderr, "server: fd %d (%s) is not a listening socket (%v)\n", fd, name, err)
			return 1
		}
		if err := unix.SetNonblock(fd, true); err != nil {
			fmt.Fprintf(os.Stderr, "server: fd %d: %v\n", fd, err)
			return 1
		}
		// Accepted sockets inherit it: every reply leaves at once.
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	}
	threads := runtime.NumCPU()
	// One P per loop thread and one for the rest, so a thread blocked in
	// epoll_wait never makes the runtime hand its P around for lack of one.
	runtime.GOMAXPROCS(threads + 1)
	ready := make(chan error, threads)
	for i := 0; i < threads; i++ {
		l := &srvLoop{replies: replies, lifeline: i == 0}
		go l.run(ready)
	}
	for i := 0; i < threads; i++ {
		if err := <-ready; err != nil {
			fmt.Fprintln(os.Stderr, "server:", err)
			return 1
		}
	}
	if _, err := os.Stdout.WriteString(serverReady + "\n"); err != nil {
		return 1
	}
	select {} // the loops run until the lifeline ends the process
}

// Per-connection state.
const (
	connFree   = iota // not a connection of this thread
	connReq           // collecting a request
	connStream        // after OpStream: discard until EOF
)

type srvConn struct {
	state    uint8
	op       byte   // first byte of the request being collected
	have     uint8  // bytes of it received
	listener uint16 // index into replies
}

type srvLoop struct {
	replies  [][ReplySize]byte
	lifeline bool // this loop also watches stdin and exits at its EOF
	epfd     int
	conns    []srvConn // by fd
	buf      [64 << 10]byte
	events   [128]unix.EpollEvent
}

func (l *srvLoop) run(ready chan<- error) {
	runtime.LockOSThread() // never unlocked: the thread is the loop's
	var err error
	if l.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		ready <- fmt.Errorf("epoll_create1: %w", err)
		return
	}
	for i := range l.replies {
		fd := firstListenFd + i
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Fd: int32(fd)}
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			ready <- fmt.Errorf("epoll add listener fd %d: %w", fd, err)
			return
		}
	}
	if l.lifeline {
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: 0}
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, 0, &ev); err != nil {
			ready <- fmt.Errorf("epoll add stdin: %w", err)
			return
		}
	}
	l.conns = make([]srvConn, 1024)
	ready <- nil
	nListeners := len(l.replies)
	for {
		n, err := unix.EpollWait(l.epfd, l.events[:], -1)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			fmt.Fprintln(os.Stderr, "server: epoll_wait:", err)
			os.Exit(1)
		}
		for i := 0; i < n; i++ {
			fd := int(l.events[i].Fd)
			switch {
			case fd == 0:
				// The parent closed our stdin, or died.
				os.Exit(0)
			case fd >= firstListenFd && fd < firstListenFd+nListeners:
				l.accept(fd, uint16(fd-firstListenFd))
			default:
				l.serve(fd)
			}
		}
	}
}

// accept takes every pending connection of the listener.
func (l *srvLoop) accept(lfd int, listener uint16) {
	for {
		fd, _, err := unix.Accept4(lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		switch err {
		case nil:
		case unix.EINTR, unix.ECONNABORTED:
			continue
		case unix.EAGAIN:
			return
		default:
			// EMFILE and the like: the listener stays readable, so back
			// off instead of spinning.
			time.Sleep(time.Millisecond)
			return
		}
		if fd >= len(l.conns) {
			l.grow(fd)
		}
		l.conns[fd] = srvConn{state: connReq, listener: listener}
		// Try at once; wait in epoll only if the request is not there yet.
		if !l.serve(fd) {
			continue
		}
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(fd)}
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			l.close(fd)
		}
	}
}

func (l *srvLoop) grow(fd int) {
	n := len(l.conns)
	for n <= fd {
		n *= 2
	}
	c := make([]srvConn, n)
	copy(c, l.conns)
	l.conns = c
}

// serve reads what the connection has and answers every complete request.
// It returns whether the connection stays open.
func (l *srvLoop) serve(fd int) bool {
	if fd >= len(l.conns) || l.conns[fd].state == connFree {
		// Not ours (cannot happen): drop it from this epoll.
		_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil)
		return false
	}
	c := &l.conns[fd]
	for {
		n, err := unix.Read(fd, l.buf[:])
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			return true
		}
		if err != nil || n == 0 {
			l.close(fd)
			return false
		}
		if c.state == connReq && !l.requests(fd, c, l.buf[:n]) {
			return false
		}
		if n < len(l.buf) {
			// Drained for now; level-triggered epoll calls again.
			return true
		}
	}
}

// requests consumes request bytes and answers each complete request; it
// returns false if it closed the connection.
func (l *srvLoop) requests(fd int, c *srvConn, b []byte) bool {
	for len(b) > 0 && c.state == connReq {
		if c.have == 0 {
			c.op = b[0]
		}
		k := min(int(RequestSize-c.have), len(b))
		c.have += uint8(k)
		b = b[k:]
		if c.have < RequestSize {
			return true
		}
		c.have = 0
		if c.op == OpStream {
			c.state = connStream // the rest is discarded
			return true
		}
		// 64 bytes into an empty or nearly empty send buffer (one request
		// is outstanding at a time): a short write means a broken peer.
		if n, err := unix.Write(fd, l.replies[c.listener][:]); err != nil || n != ReplySize {
			l.close(fd)
			return false
		}
		if c.op == OpClose {
			l.close(fd)
			return false
		}
	}
	return true
}

// close closes the connection; closing its only fd also drops it from the
// epoll instance.
func (l *srvLoop) close(fd int) {
	l.conns[fd] = srvConn{}
	unix.Close(fd)
}
