package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fastpath-net/fastpath/internal/l7"
	"github.com/fastpath-net/fastpath/internal/l7proxy"
	"github.com/fastpath-net/fastpath/internal/l7redirect"
	"github.com/fastpath-net/fastpath/test/bench/internal/benchmain"
)

// roleEnv selects what a child process of this binary does.
const roleEnv = "FP_L7BENCH_ROLE"

// benchRequest is what the load generator sends: allowed by benchRules'
// second allow rule, after the deny and the first allow were tried.
const benchRequest = "GET /api/v1/items?page=2 HTTP/1.1\r\nHost: api.example\r\nUser-Agent: fp-l7bench\r\nAccept: */*\r\nX-Token: t0k3n\r\n\r\n"

// deniedRequest is refused by benchRules' deny rule.
const deniedRequest = "GET /api/v1/admin HTTP/1.1\r\nHost: api.example\r\nX-Token: t0k3n\r\n\r\n"

var benchRules = l7.RuleSet{
	Allow: []l7.NamedRule{
		{Name: "public", Rule: l7.HTTPRule{Method: "GET|HEAD", Path: "/public/.*"}},
		{Name: "api", Rule: l7.HTTPRule{Method: "GET", Host: `api\.example`, Path: "/api/v[0-9]+/.*", Headers: []l7.HeaderMatch{{Name: "X-Token", Regex: "[a-z0-9]+"}}}},
	},
	Deny: []l7.NamedRule{{Name: "no-admin", Rule: l7.HTTPRule{Path: "/api/v[0-9]+/admin.*"}}},
}

var upstreamResponse = []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\nhello world\n")

// raiseNoFile lifts the soft descriptor limit to the hard one (this
// process only): 1,000 idle connections need about 2,000.
func raiseNoFile() {
	var r unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &r) == nil {
		r.Cur = r.Max
		unix.Setrlimit(unix.RLIMIT_NOFILE, &r)
	}
}

// listenAndAnnounce opens the listeners and prints the first one's
// address, which the orchestrator waits for.
func listenAndAnnounce(open func() (net.Listener, error), more ...func() (net.Listener, error)) []net.Listener {
	var lns []net.Listener
	for _, f := range append([]func() (net.Listener, error){open}, more...) {
		ln, err := f()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		lns = append(lns, ln)
	}
	fmt.Println(lns[0].Addr().String())
	return lns
}

func tcpListen(addr string) func() (net.Listener, error) {
	return func() (net.Listener, error) { return net.Listen("tcp4", addr) }
}

func waitSignal() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, os.Interrupt)
	<-ch
}

// upstreamMain is a minimal keep-alive HTTP/1.1 server (bodiless requests,
// one fixed response) so that the upstream costs as little as possible. Its
// arguments are the addresses it listens on (default: loopback, any port).
func upstreamMain() {
	raiseNoFile()
	addrs := os.Args[1:]
	if len(addrs) == 0 {
		addrs = []string{"127.0.0.1:0"}
	}
	var more []func() (net.Listener, error)
	for _, a := range addrs[1:] {
		more = append(more, tcpListen(a))
	}
	for _, ln := range listenAndAnnounce(tcpListen(addrs[0]), more...) {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go serveFixed(c)
			}
		}()
	}
	waitSignal()
}

func serveFixed(c net.Conn) {
	defer c.Close()
	br := bufio.NewReaderSize(c, 4096)
	for {
		if err := skipHead(br); err != nil {
			return
		}
		if _, err := c.Write(upstreamResponse); err != nil {
			return
		}
	}
}

// skipHead reads through the next "\r\n\r\n".
func skipHead(br *bufio.Reader) error {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) == 2 && line[0] == '\r' {
			return nil
		}
	}
}

type fixedPolicy []l7proxy.Applied

func (p fixedPolicy) Lookup(l7proxy.Flow) []l7proxy.Applied { return p }

// proxyMain runs the agent's L7 proxy with the bench's rules. Its argument
// is either the upstream's address (loopback: it listens on 127.0.0.1 and
// dials that address) or "transparent": it runs in the node's namespace
// and takes what the datapath redirects, as the agent does
// (l7redirect.Listen on proxyPort, the original destination dialled with
// l7redirect.Dial).
func proxyMain() {
	raiseNoFile()
	upstream := os.Args[1]
	rules, err := l7.Compile(benchRules)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	listen := tcpListen("127.0.0.1:0")
	dial := func(ctx context.Context, _ l7proxy.Flow) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", upstream)
	}
	if upstream == "transparent" {
		listen = func() (net.Listener, error) { return l7redirect.Listen("", proxyPort) }
		dial = func(ctx context.Context, f l7proxy.Flow) (net.Conn, error) {
			return l7redirect.Dial(ctx, "", f.Dst.String())
		}
	}
	var events atomic.Int64
	p := l7proxy.New(l7proxy.Config{
		Policy: fixedPolicy{{Direction: l7proxy.Ingress, Endpoint: "fp-bench/server", Rules: rules}},
		Dial:   dial,
		Events: func(l7proxy.Event) { events.Add(1) },
	})
	stopProfile := startProfile(os.Getenv(profileEnv))
	go p.Serve(listenAndAnnounce(listen)[0])
	waitSignal()
	stopProfile()
}

// profileEnv names a file for the CPU profile of the proxy of the real path
// (-cpuprofile), written when it stops.
const profileEnv = "FP_L7BENCH_CPUPROFILE"

func startProfile(path string) (stop func()) {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cpu profile:", err)
		os.Exit(1)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// loadRequest is the orchestrator's order to a load generator.
type loadRequest struct {
	Target   string
	Conns    int
	Duration time.Duration
	// Rate > 0: open loop at Rate requests/s in all (paced), else closed
	// loop.
	Rate float64
}

// loadResult is what a load generator measured.
type loadResult struct {
	Requests int64
	Errors   int64
	Elapsed  time.Duration
	P50, P99 time.Duration
	// Paced: how late the sends left after their scheduled times (the
	// connection was still busy, or the generator's timer was late), part
	// of P50/P99.
	LagP50 time.Duration
	CPU    time.Duration // the load generator's own user+system time
}

// loadgenMain runs keep-alive clients: closed loop (each connection sends
// the next request when the previous response is complete) or paced (-rate);
// it records every latency.
func loadgenMain() {
	raiseNoFile()
	fs := flag.NewFlagSet("loadgen", flag.ExitOnError)
	var req loadRequest
	fs.StringVar(&req.Target, "target", "", "")
	fs.IntVar(&req.Conns, "conns", 1, "")
	fs.DurationVar(&req.Duration, "duration", time.Second, "")
	fs.Float64Var(&req.Rate, "rate", 0, "")
	fs.Parse(os.Args[1:])
	res, err := generate(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	json.NewEncoder(os.Stdout).Encode(res)
}

// schedule says when request k of connection i is due (ns on
// CLOCK_MONOTONIC): closed loop, at once; paced, connection i sends every
// conns/rate from an offset of i/rate, so the connections' sends
// interleave evenly. Latency counts from the due time, as wrk2 does: a late
// response delays the connection's next sends, and that wait counts in
// theirs (no coordinated omission).
type schedule struct {
	start    int64
	interval int64 // between two sends of one connection; 0: closed loop
	offset   int64 // per connection index
}

func newSchedule(start int64, conns int, rate float64) schedule {
	if rate <= 0 {
		return schedule{start: start}
	}
	return schedule{start: start, interval: int64(float64(conns) / rate * 1e9), offset: int64(1e9 / rate)}
}

func (s schedule) due(i, k int) int64 {
	if s.interval == 0 {
		return monotonic()
	}
	return s.start + int64(i)*s.offset + int64(k)*s.interval
}

func monotonic() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// sleepUntil sleeps on an absolute hrtimer, in this thread: Go's own
// timers wake the runtime's poller with millisecond granularity when it
// has nothing else to do, which delayed the sends of the lightly loaded
// path (L4: 0.5-0.7 ms of lag, L7 0.1 ms, in a first try). Paced
// connections therefore each run on an OS thread of their own with
// blocking syscalls, outside Go's scheduler and poller: a send leaves when
// it is due and a response is timed when the kernel hands it over.
func sleepUntil(t int64) {
	ts := unix.NsecToTimespec(t)
	for unix.ClockNanosleep(unix.CLOCK_MONOTONIC, unix.TIMER_ABSTIME, &ts, nil) == unix.EINTR {
	}
}

// fdConn is a blocking socket read and written with plain syscalls.
type fdConn int

func (c fdConn) Read(b []byte) (int, error) {
	n, err := unix.Read(int(c), b)
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

func (c fdConn) Write(b []byte) (int, error) { return unix.Write(int(c), b) }

func (c fdConn) Close() error { return unix.Close(int(c)) }

func dialBlocking(target string) (fdConn, error) {
	ap, err := netip.ParseAddrPort(target)
	if err != nil || !ap.Addr().Is4() {
		return -1, fmt.Errorf("target %q: want IPv4 address:port", target)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("connect %s: %w", target, err)
	}
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	return fdConn(fd), nil
}

// generate measures closed loop on Go's poller (goroutines, one P: a
// connection's next request waits for the previous response, and many
// connections share few wake-ups, which is what a rate needs) or paced
// with a thread per connection (generatePaced).
func generate(req loadRequest) (*loadResult, error) {
	var conns []io.ReadWriter
	var readers []*bufio.Reader
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	for range req.Conns {
		var c io.ReadWriter
		if req.Rate > 0 {
			fd, err := dialBlocking(req.Target)
			if err != nil {
				return nil, err
			}
			c = fd
		} else {
			nc, err := net.Dial("tcp4", req.Target)
			if err != nil {
				return nil, err
			}
			c = nc
		}
		closers = append(closers, c.(io.Closer))
		conns, readers = append(conns, c), append(readers, bufio.NewReader(c))
	}
	// Warm up every connection (and the proxy's upstream leg) first.
	for i, c := range conns {
		if err := roundTrip(c, readers[i]); err != nil {
			return nil, fmt.Errorf("warm-up: %w", err)
		}
	}
	var ru0 unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru0)
	start := monotonic()
	deadline := start + req.Duration.Nanoseconds()
	sched := newSchedule(start, len(conns), req.Rate)
	if req.Rate > 0 {
		// One P per connection: a thread blocked in read never holds up
		// another. The process stays on its one CPU (taskset).
		runtime.GOMAXPROCS(req.Conns + 1)
	}
	lat := make([][]time.Duration, len(conns))
	lag := make([][]time.Duration, len(conns))
	errs := make([]int64, len(conns))
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if sched.interval > 0 {
				runtime.LockOSThread()
				unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0) // this thread's sleeps: no 50 µs slack
			}
			samples := make([]time.Duration, 0, 1<<16)
			var late []time.Duration
			for k := 0; ; k++ {
				due := sched.due(i, k)
				if due > deadline {
					break
				}
				if sched.interval > 0 {
					sleepUntil(due)
					late = append(late, time.Duration(monotonic()-due))
				}
				if err := roundTrip(c, readers[i]); err != nil {
					errs[i]++
					break
				}
				samples = append(samples, time.Duration(monotonic()-due))
			}
			lat[i], lag[i] = samples, late
		}()
	}
	wg.Wait()
	elapsed := time.Duration(monotonic() - start)
	var ru1 unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru1)
	all := slices.Concat(lat...)
	res := &loadResult{Requests: int64(len(all)), Elapsed: elapsed, CPU: rusageCPU(ru1) - rusageCPU(ru0),
		P50: benchmain.Quantile(all, 0.50), P99: benchmain.Quantile(all, 0.99), LagP50: benchmain.Quantile(slices.Concat(lag...), 0.50)}
	for _, e := range errs {
		res.Errors += e
	}
	return res, nil
}

func rusageCPU(r unix.Rusage) time.Duration {
	return time.Duration(r.Utime.Nano() + r.Stime.Nano())
}

// roundTrip sends benchRequest and reads one response with a
// Content-Length body (the upstream's, possibly re-written by the proxy).
func roundTrip(c io.Writer, br *bufio.Reader) error {
	if _, err := io.WriteString(c, benchRequest); err != nil {
		return err
	}
	status, err := br.ReadSlice('\n')
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(status, []byte("HTTP/1.1 200 ")) {
		return fmt.Errorf("status %q", status)
	}
	length := -1
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) == 2 {
			break
		}
		if name, value, ok := bytes.Cut(line, []byte(":")); ok && bytes.EqualFold(name, []byte("Content-Length")) {
			length, _ = strconv.Atoi(string(bytes.TrimSpace(value)))
		}
	}
	if length < 0 {
		return fmt.Errorf("response without Content-Length")
	}
	_, err = br.Discard(length)
	return err
}
