package loadgen

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/fastpath-net/fastpath/internal/nettopo"
	"github.com/fastpath-net/fastpath/test/bench/internal/procstat"
	"github.com/fastpath-net/fastpath/test/internal/syncbuf"
)

// The backend servers run in a child process of the harness (the harness
// binary started again with serverEnv=1, like the load generator), on an
// epoll event loop of raw syscalls (serverMain), so no Go scheduling sits in
// a connection's path: Go's netpoller with a goroutine per connection put
// 8-13 context switches and a 2x swing into every connection's server side.
// The parent creates the listening sockets inside the backends' namespaces
// and hands their fds to the child, which never enters a namespace itself.
const (
	serverEnv = "FP_BENCH_SERVER"
	// serverNamesEnv holds the listeners' reply names, a JSON array in the
	// order of the child's fds 3, 4, ...
	serverNamesEnv = "FP_BENCH_SERVER_NAMES"
	serverReady    = "ready"
	firstListenFd  = 3 // exec.Cmd.ExtraFiles start at fd 3
)

// Listener is one backend a server child answers for.
type Listener struct {
	NS   *nettopo.NS
	Addr string // ip:port to listen on inside NS
	Name string // what Ask reads back ("be1:8080"); at most ReplySize-1 bytes
}

// Servers is a running server child.
type Servers struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser // the child's lifeline: it exits when this closes
	stderr *syncbuf.Buffer
	done   chan struct{} // closed when the child has been reaped
	err    error         // the child's exit, valid after done
	once   sync.Once
	closed error
}

// StartServers listens on every listener inside its namespace and starts
// one child process that serves them all. The child dies with the parent
// (Pdeathsig, and it exits when its stdin closes).
func StartServers(ls []Listener) (s *Servers, err error) {
	if len(ls) == 0 {
		return nil, errors.New("servers: no listeners")
	}
	names := make([]string, len(ls))
	for i, l := range ls {
		if err := checkName(l.Name); err != nil {
			return nil, err
		}
		names[i] = l.Name
	}
	// The parent's copies of the listening sockets are closed whatever
	// happens: the child holds its own once started.
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, l := range ls {
		f, err := listenFile(l)
		if err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	namesJSON, err := json.Marshal(names)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), serverEnv+"=1", serverNamesEnv+"="+string(namesJSON))
	cmd.ExtraFiles = files
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	s = &Servers{cmd: cmd, stderr: &syncbuf.Buffer{}, done: make(chan struct{})}
	cmd.Stderr = s.stderr
	if s.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		s.stdin.Close()
		return nil, err
	}
	// Pdeathsig fires when the thread that forked the child ends, not the
	// process, and Go ends a thread whenever a goroutine locked to it exits
	// (as namespace helpers do): fork from a thread of our own, locked until
	// the child has been reaped.
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		s.err = cmd.Wait()
		close(s.done)
	}()
	if err := <-started; err != nil {
		// Start closes the pipes it made.
		return nil, fmt.Errorf("start server child: %w", err)
	}
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err == nil && line != serverReady+"\n" {
			err = fmt.Errorf("unexpected %q", line)
		}
		ready <- err
	}()
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	select {
	case err = <-ready:
	case <-timeout.C:
		err = errors.New("not ready after 10s")
	}
	if err != nil {
		// Kill the child we started (by its process), then reap it; that
		// also ends the reader above.
		_ = cmd.Process.Kill()
		<-s.done
		return nil, fmt.Errorf("server child: %v: %s", err, procstat.Tail(s.stderr.String(), 2000))
	}
	return s, nil
}

// listenFile opens the listening socket inside l.NS and returns it as a
// file (a duplicate of the socket; the listener itself is closed).
func listenFile(l Listener) (*os.File, error) {
	ln, err := l.NS.Listen("tcp4", l.Addr)
	if err != nil {
		return nil, fmt.Errorf("server %s in %s: %w", l.Addr, l.NS.Name, err)
	}
	defer ln.Close()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		return nil, fmt.Errorf("server %s in %s: %w", l.Addr, l.NS.Name, err)
	}
	return f, nil
}

func checkName(name string) error {
	if name == "" || len(name) >= ReplySize || bytes.ContainsAny([]byte(name), "\n\x00") {
		return fmt.Errorf("server name %q: want 1..%d bytes, no newline", name, ReplySize-1)
	}
	return nil
}

// Pid is the child's process ID (for its CPU time).
func (s *Servers) Pid() int { return s.cmd.Process.Pid }

// Err reports whether the child has died; nil while it runs.
func (s *Servers) Err() error {
	select {
	case <-s.done:
		return fmt.Errorf("server child died: %v: %s", s.err, procstat.Tail(s.stderr.String(), 2000))
	default:
		return nil
	}
}

// Close ends the child and reaps it; it reports an error if the child had
// died before. Calling it again returns the same.
func (s *Servers) Close() error {
	s.once.Do(func() {
		s.closed = s.Err()
		s.stdin.Close()
		t := time.NewTimer(5 * time.Second)
		defer t.Stop()
		select {
		case <-s.done:
		case <-t.C:
			// Our own child, by its process handle: it ignored its lifeline.
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	})
	return s.closed
}

// Ask sends one closing request on c and returns the name the server
// answered with.
func Ask(c net.Conn) (string, error) {
	var req [RequestSize]byte
	req[0] = OpClose
	if _, err := c.Write(req[:]); err != nil {
		return "", err
	}
	var buf [ReplySize]byte
	if _, err := io.ReadFull(c, buf[:]); err != nil {
		return "", err
	}
	name, _, ok := bytes.Cut(buf[:], []byte("\n"))
	if !ok {
		return "", errors.New("reply without a name")
	}
	return string(name), nil
}
