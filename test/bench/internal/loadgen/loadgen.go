// Package loadgen is the benchmarks' load generator and backend servers:
// short TCP connections, requests on kept-alive connections and one bulk
// stream, to targets picked at random, from inside an fp- network namespace.
// bench-datapath and the headline comparison (bench-control -headline) both
// use it, so their numbers come from the same client.
//
// The load generator runs as a child process of the harness (the harness
// binary started again with loadgenEnv=1; its main calls IsChild and Main
// first), for two reasons: a client of the socket load balancer must be a
// process inside the benchmark's cgroup, and a process of its own lets
// getrusage show what the generator itself costs.
//
// Each worker is a goroutine locked to an OS thread that has entered the
// client's network namespace (and checked that it did) before it creates
// its first socket. Sockets are blocking and driven by raw syscalls
// (socket/connect/write/read/close), without Go's netpoller or net/http,
// so nothing is ever dialled from another thread or namespace.
//
// The backend servers are a child process too (StartServers, serverMain):
// an epoll event loop of raw syscalls on locked threads, so no Go
// scheduling sits in a connection's server side.
package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fastpath-net/fastpath/test/bench/internal/procstat"
)

// loadgenEnv makes the harness binary (or the smoke test's binary) act as
// the load generator: it reads a Request on stdin and writes a
// Result on stdout.
const loadgenEnv = "FP_BENCH_LOADGEN"

// Kinds of load.
const (
	KindConn    = "conn"    // connect, request, read reply until the server closes, close
	KindLatency = "latency" // requests on kept-alive connections, one outstanding per worker
	// KindStream: each worker opens one connection and writes to it as
	// fast as it can; Ops counts bytes, so Rate is bytes per second.
	KindStream = "stream"
)

// Wire format between client and server: a fixed-size request whose first
// byte says whether the server closes after its reply, and a fixed-size
// reply.
const (
	RequestSize = 16
	ReplySize   = 64
	OpClose     = 'C'
	OpKeep      = 'K'
	OpStream    = 'S' // the server reads and discards until the client closes
)

type Request struct {
	NetNS    string        `json:"netns"`   // /run/netns/fp-...
	Targets  []string      `json:"targets"` // ip:port; one is picked at random per connection
	Kind     string        `json:"kind"`
	Workers  int           `json:"workers"`
	Duration time.Duration `json:"duration"` // measured window
	Warmup   time.Duration `json:"warmup"`   // load before the window, not counted
	Pool     int           `json:"pool"`     // kept-alive connections per worker (latency)
	Seed     uint64        `json:"seed"`
}

type Result struct {
	Ops      uint64            `json:"ops"`    // completed connections (conn) or requests (latency)
	Errors   uint64            `json:"errors"` // failed ones, in the window
	ErrKinds map[string]uint64 `json:"errKinds,omitempty"`
	Window   time.Duration     `json:"window"` // measured wall time
	// Latency of one op in ns: whole connection (conn) or request (latency).
	P50, P90, P99, Max uint64
	// CPU the generator process used in the window (getrusage RUSAGE_SELF).
	UserSec float64 `json:"userSec"`
	SysSec  float64 `json:"sysSec"`
	Stuck   int     `json:"stuck,omitempty"` // workers still blocked after the grace period
	Err     string  `json:"err,omitempty"`
}

// rate is ops per second in the window.
func (r *Result) Rate() float64 {
	if r.Window <= 0 {
		return 0
	}
	return float64(r.Ops) / r.Window.Seconds()
}

// cpuPct is the generator's CPU use in percent of one core.
func (r *Result) CPUPct() float64 {
	if r.Window <= 0 {
		return 0
	}
	return 100 * (r.UserSec + r.SysSec) / r.Window.Seconds()
}

// Main is the child's main. It returns the exit code.
func Main() int {
	if os.Getenv(serverEnv) == "1" {
		return serverMain()
	}
	res := runLoadgen(os.Stdin)
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		return 1
	}
	if res.Err != "" {
		return 1
	}
	return 0
}

func runLoadgen(in io.Reader) *Result {
	var req Request
	if err := json.NewDecoder(in).Decode(&req); err != nil {
		return &Result{Err: "bad request: " + err.Error()}
	}
	res, err := generate(req)
	if err != nil {
		return &Result{Err: err.Error()}
	}
	return res
}

// gen is what the workers share.
type gen struct {
	req      Request
	targets  []target
	nsFd     int
	nsStat   unix.Stat_t
	warmEnd  time.Time
	end      time.Time
	start    chan struct{}
	ready    chan error
	finished chan *workerResult
}

// target is one destination, 8 bytes: with 50,000 targets the list is
// 400 KB instead of the 1.6 MB of unix.SockaddrInet4 values (which also
// carry the raw form that Connect writes into), so the random pick per
// connection misses the cache less (a cpu-clock profile put the pick in a 50,000
// list at +0.5 us a connection against N=1's).
type target struct {
	addr [4]byte
	port uint16
}

func (t target) set(sa *unix.SockaddrInet4) { sa.Addr, sa.Port = t.addr, int(t.port) }

type workerResult struct {
	ops, errs uint64
	errKinds  map[string]uint64
	h         hist
}

func generate(req Request) (*Result, error) {
	if !strings.HasPrefix(req.NetNS, "/run/netns/fp-") {
		// Never generate load outside a namespace the harness made.
		return nil, fmt.Errorf("netns %q: must be an fp- namespace under /run/netns", req.NetNS)
	}
	if req.Workers < 1 || req.Workers > 64 || req.Duration <= 0 || len(req.Targets) == 0 {
		return nil, fmt.Errorf("bad request: workers %d, duration %s, %d targets", req.Workers, req.Duration, len(req.Targets))
	}
	if req.Kind != KindConn && req.Kind != KindLatency && req.Kind != KindStream {
		return nil, fmt.Errorf("unknown kind %q", req.Kind)
	}
	if req.Kind == KindLatency && (req.Pool < 1 || req.Pool > 4096) {
		return nil, fmt.Errorf("pool %d: want 1..4096", req.Pool)
	}
	// One P per worker and one for the rest, so a worker blocked in a
	// syscall never has its P taken away for lack of an idle one.
	runtime.GOMAXPROCS(req.Workers + 1)
	g := &gen{req: req, start: make(chan struct{}), ready: make(chan error, req.Workers),
		finished: make(chan *workerResult, req.Workers)}
	for _, t := range req.Targets {
		ap, err := netip.ParseAddrPort(t)
		if err != nil || !ap.Addr().Is4() {
			return nil, fmt.Errorf("target %q: want an IPv4 address:port", t)
		}
		g.targets = append(g.targets, target{addr: ap.Addr().As4(), port: ap.Port()})
	}
	fd, err := unix.Open(req.NetNS, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", req.NetNS, err)
	}
	defer unix.Close(fd)
	if err := unix.Fstat(fd, &g.nsStat); err != nil {
		return nil, fmt.Errorf("stat netns %s: %w", req.NetNS, err)
	}
	g.nsFd = fd

	for i := 0; i < req.Workers; i++ {
		go g.worker(i)
	}
	for i := 0; i < req.Workers; i++ {
		if err := <-g.ready; err != nil {
			// Workers that are ready wait on start forever; the process ends.
			return nil, err
		}
	}
	g.warmEnd = time.Now().Add(req.Warmup)
	g.end = g.warmEnd.Add(req.Duration)
	close(g.start)

	time.Sleep(time.Until(g.warmEnd))
	var ru0, ru1 unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru0)

	total := &workerResult{errKinds: map[string]uint64{}}
	grace := time.NewTimer(time.Until(g.end) + 5*time.Second)
	defer grace.Stop()
	stuck := req.Workers
collect:
	for stuck > 0 {
		select {
		case w := <-g.finished:
			total.ops += w.ops
			total.errs += w.errs
			for k, v := range w.errKinds {
				total.errKinds[k] += v
			}
			total.h.merge(&w.h)
			stuck--
		case <-grace.C:
			break collect
		}
	}
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru1)
	res := &Result{
		Ops: total.ops, Errors: total.errs, Window: req.Duration, Stuck: stuck,
		P50: total.h.quantile(0.50), P90: total.h.quantile(0.90), P99: total.h.quantile(0.99), Max: total.h.max(),
		UserSec: TvSec(ru1.Utime) - TvSec(ru0.Utime),
		SysSec:  TvSec(ru1.Stime) - TvSec(ru0.Stime),
	}
	if len(total.errKinds) > 0 {
		res.ErrKinds = total.errKinds
	}
	return res, nil
}

func TvSec(tv unix.Timeval) float64 { return float64(tv.Sec) + float64(tv.Usec)/1e6 }

// worker runs on its own OS thread inside the namespace. The thread is never
// unlocked: it ends with the goroutine, so no other goroutine can inherit
// the namespace, and the process's other threads never leave their own.
func (g *gen) worker(id int) {
	runtime.LockOSThread()
	if err := unix.Setns(g.nsFd, unix.CLONE_NEWNET); err != nil {
		g.ready <- fmt.Errorf("worker %d: enter netns %s: %w", id, g.req.NetNS, err)
		return
	}
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil || st.Ino != g.nsStat.Ino || st.Dev != g.nsStat.Dev {
		g.ready <- fmt.Errorf("worker %d: thread is not in netns %s after setns (%v)", id, g.req.NetNS, err)
		return
	}
	w := &workerResult{errKinds: map[string]uint64{}}
	rng := rand.New(rand.NewPCG(g.req.Seed, uint64(id)+1))
	var pool []int
	if g.req.Kind == KindLatency {
		for len(pool) < g.req.Pool {
			fd, err := g.dialKeep(rng)
			if err != nil {
				for _, fd := range pool {
					unix.Close(fd)
				}
				g.ready <- fmt.Errorf("worker %d: open kept-alive connection %d: %w", id, len(pool)+1, err)
				return
			}
			pool = append(pool, fd)
		}
	}
	g.ready <- nil
	<-g.start
	switch g.req.Kind {
	case KindConn:
		g.connLoop(w, rng)
	case KindStream:
		g.streamLoop(w, rng)
	default:
		g.latencyLoop(w, rng, pool)
	}
	g.finished <- w
}

func (g *gen) connLoop(w *workerResult, rng *rand.Rand) {
	var buf [2 * ReplySize]byte
	var req [RequestSize]byte
	req[0] = OpClose
	var sa unix.SockaddrInet4
	n := len(g.targets)
	for {
		t := time.Now()
		if !t.Before(g.end) {
			return
		}
		g.targets[rng.IntN(n)].set(&sa)
		err := oneConn(&sa, req[:], buf[:])
		d := time.Since(t)
		if t.Before(g.warmEnd) {
			continue
		}
		if err != nil {
			w.errs++
			w.errKinds[errName(err)]++
			continue
		}
		w.ops++
		w.h.record(int64(d))
	}
}

// oneConn is one short connection: connect, request, read the reply until
// the server closes, close. The server closes first, so TIME_WAIT stays on
// its side and the client's ports are free again at once.
func oneConn(sa *unix.SockaddrInet4, req, buf []byte) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	if err := connect(fd, sa); err != nil {
		unix.Close(fd)
		return fmt.Errorf("connect: %w", err)
	}
	if err := writeFull(fd, req); err != nil {
		unix.Close(fd)
		return err
	}
	total := 0
	for {
		n, err := unix.Read(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			unix.Close(fd)
			return fmt.Errorf("read: %w", err)
		}
		if n == 0 {
			break
		}
		total += n
	}
	unix.Close(fd)
	if total != ReplySize {
		return errShortReply
	}
	return nil
}

var errShortReply = errors.New("reply of the wrong size")

// connect is a blocking connect(2) that survives a signal: the runtime's
// signals can interrupt it, and on a socket with a send timeout the kernel
// then returns EINTR instead of restarting, while the handshake goes on.
// Wait for the handshake (at most 5 s) and take its outcome.
func connect(fd int, sa *unix.SockaddrInet4) error {
	err := unix.Connect(fd, sa)
	if err != unix.EINTR && err != unix.EALREADY {
		return err
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return unix.ETIMEDOUT
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		n, err := unix.Poll(pfd, int(left/time.Millisecond)+1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n > 0 {
			break
		}
	}
	v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return err
	}
	if v != 0 {
		return unix.Errno(v)
	}
	return nil
}

func (g *gen) dialKeep(rng *rand.Rand) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		unix.Close(fd)
		return -1, err
	}
	// Bound every later read and write, so a lost peer cannot hang a worker.
	tv := unix.Timeval{Sec: 5}
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	var sa unix.SockaddrInet4
	g.targets[rng.IntN(len(g.targets))].set(&sa)
	if err := connect(fd, &sa); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("connect %d.%d.%d.%d:%d: %w", sa.Addr[0], sa.Addr[1], sa.Addr[2], sa.Addr[3], sa.Port, err)
	}
	// One request at once, so the server has taken the connection over
	// before the window starts.
	var req [RequestSize]byte
	var buf [ReplySize]byte
	req[0] = OpKeep
	if err := roundTrip(fd, req[:], buf[:]); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func (g *gen) latencyLoop(w *workerResult, rng *rand.Rand, pool []int) {
	defer func() {
		for _, fd := range pool {
			if fd >= 0 {
				unix.Close(fd)
			}
		}
	}()
	var req [RequestSize]byte
	req[0] = OpKeep
	var buf [ReplySize]byte
	for {
		i := rng.IntN(len(pool))
		t := time.Now()
		if !t.Before(g.end) {
			return
		}
		err := roundTrip(pool[i], req[:], buf[:])
		d := time.Since(t)
		if err != nil {
			if !t.Before(g.warmEnd) {
				w.errs++
				w.errKinds[errName(err)]++
			}
			if pool[i] >= 0 {
				unix.Close(pool[i])
			}
			// Bounded by the window: one redial per failed request.
			fd, derr := g.dialKeep(rng)
			if derr != nil {
				fd = -1
				time.Sleep(time.Millisecond)
			}
			pool[i] = fd
			continue
		}
		if t.Before(g.warmEnd) {
			continue
		}
		w.ops++
		w.h.record(int64(d))
	}
}

// streamLoop writes 128 KiB at a time on one connection until the window
// ends; a failed connection is counted and opened again. The latency
// recorded is of one write.
func (g *gen) streamLoop(w *workerResult, rng *rand.Rand) {
	buf := make([]byte, 128<<10)
	buf[0] = OpStream
	fd := -1
	defer func() {
		if fd >= 0 {
			unix.Close(fd)
		}
	}()
	for {
		t := time.Now()
		if !t.Before(g.end) {
			return
		}
		if fd < 0 {
			var err error
			if fd, err = g.dialStream(rng, buf[:RequestSize]); err != nil {
				fd = -1
				w.errs++
				w.errKinds[errName(err)]++
				time.Sleep(10 * time.Millisecond)
				continue
			}
		}
		n, err := unix.Write(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			unix.Close(fd)
			fd = -1
			if !t.Before(g.warmEnd) {
				w.errs++
				w.errKinds[errName(fmt.Errorf("write: %w", err))]++
			}
			continue
		}
		if t.Before(g.warmEnd) {
			continue
		}
		w.ops += uint64(n)
		w.h.record(int64(time.Since(t)))
	}
}

// dialStream opens the stream's connection and sends the request that
// turns the server into a sink.
func (g *gen) dialStream(rng *rand.Rand, req []byte) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	tv := unix.Timeval{Sec: 5}
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	var sa unix.SockaddrInet4
	g.targets[rng.IntN(len(g.targets))].set(&sa)
	if err := connect(fd, &sa); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("connect: %w", err)
	}
	if err := writeFull(fd, req); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func roundTrip(fd int, req, buf []byte) error {
	if fd < 0 {
		return errors.New("no connection")
	}
	if err := writeFull(fd, req); err != nil {
		return err
	}
	got := 0
	for got < len(buf) {
		n, err := unix.Read(fd, buf[got:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		if n == 0 {
			return errors.New("read: server closed")
		}
		got += n
	}
	return nil
}

func writeFull(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("write: %w", err)
		}
		b = b[n:]
	}
	return nil
}

// errName groups errors by syscall and errno, for the report.
func errName(err error) string {
	if err == nil {
		return "redial failed"
	}
	var errno unix.Errno
	op, _, _ := strings.Cut(err.Error(), ":")
	if errors.As(err, &errno) {
		return op + ": " + unix.ErrnoName(errno)
	}
	return err.Error()
}

// Spec is one measurement as the harness asks for it.
type Spec struct {
	Request
	Cgroup string // cgroup v2 directory to start the child in; "" = the harness's own
}

// Run starts the load generator child and returns its result.
func Run(ctx context.Context, spec Spec) (*Result, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	in, err := json.Marshal(spec.Request)
	if err != nil {
		return nil, err
	}
	// Pool setup, warm-up, window and a generous margin.
	limit := spec.Warmup + spec.Duration + 60*time.Second
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(os.Environ(), loadgenEnv+"=1", "GOGC=400")
	cmd.Stdin = bytes.NewReader(in)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.WaitDelay = 5 * time.Second
	if spec.Cgroup != "" {
		// CLONE_INTO_CGROUP: the child never runs a moment outside the
		// cgroup, and the harness itself never joins it.
		dir, err := os.Open(spec.Cgroup)
		if err != nil {
			return nil, err
		}
		defer dir.Close()
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(dir.Fd())}
	}
	runErr := cmd.Run()
	var res Result
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		return nil, fmt.Errorf("load generator: %v (exit: %v) stderr: %s", err, runErr, procstat.Tail(errOut.String(), 2000))
	}
	if res.Err != "" {
		return nil, fmt.Errorf("load generator: %s", res.Err)
	}
	if runErr != nil {
		return nil, fmt.Errorf("load generator: %v: %s", runErr, procstat.Tail(errOut.String(), 2000))
	}
	return &res, nil
}

// IsChild is true in a child process: the load generator or the server
// child (StartServers); Main then runs whichever it is.
func IsChild() bool { return os.Getenv(loadgenEnv) == "1" || os.Getenv(serverEnv) == "1" }

// RemoveCgroup removes an (empty) cgroup v2 directory that clients were
// started in; a reaped child can keep it busy for a moment.
func RemoveCgroup(path string) error {
	var err error
	for range 100 {
		if err = os.Remove(path); err == nil || errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("remove cgroup %s: %w", path, err)
}
