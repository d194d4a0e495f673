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
	"os"
	"os/signal"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fastpath-net/fastpath/internal/l7"
	"github.com/fastpath-net/fastpath/internal/l7proxy"
)

// roleEnv selects what a child process of this binary does.
const roleEnv = "FP_L7BENCH_ROLE"

// benchRequest is what the load generator sends: allowed by benchRules'
// second allow rule, after the deny and the first allow were tried.
const benchRequest = "GET /api/v1/items?page=2 HTTP/1.1\r\nHost: api.example\r\nUser-Agent: fp-l7bench\r\nAccept: */*\r\nX-Token: t0k3n\r\n\r\n"

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

func listenAndAnnounce() net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr().String()) // the orchestrator reads the address
	return ln
}

func waitSignal() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, os.Interrupt)
	<-ch
}

// upstreamMain is a minimal keep-alive HTTP/1.1 server (bodiless requests,
// one fixed response) so that the upstream costs as little as possible.
func upstreamMain() {
	raiseNoFile()
	ln := listenAndAnnounce()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serveFixed(c)
		}
	}()
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

func proxyMain() {
	raiseNoFile()
	upstream := os.Args[1]
	rules, err := l7.Compile(benchRules)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var events atomic.Int64
	p := l7proxy.New(l7proxy.Config{
		Policy: fixedPolicy{{Direction: l7proxy.Ingress, Endpoint: "fp-bench/server", Rules: rules}},
		Dial: func(ctx context.Context, _ l7proxy.Flow) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", upstream)
		},
		Events: func(l7proxy.Event) { events.Add(1) },
	})
	ln := listenAndAnnounce()
	go p.Serve(ln)
	waitSignal()
}

// loadRequest is the orchestrator's order to a load generator.
type loadRequest struct {
	Target   string
	Conns    int
	Duration time.Duration
}

// loadResult is what a load generator measured.
type loadResult struct {
	Requests int64
	Errors   int64
	Elapsed  time.Duration
	P50, P99 time.Duration
	CPU      time.Duration // the load generator's own user+system time
}

// loadgenMain runs closed-loop keep-alive clients: each connection sends
// the next request when the previous response is complete; it records
// every latency.
func loadgenMain() {
	raiseNoFile()
	fs := flag.NewFlagSet("loadgen", flag.ExitOnError)
	var req loadRequest
	fs.StringVar(&req.Target, "target", "", "")
	fs.IntVar(&req.Conns, "conns", 1, "")
	fs.DurationVar(&req.Duration, "duration", time.Second, "")
	fs.Parse(os.Args[1:])
	res, err := generate(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	json.NewEncoder(os.Stdout).Encode(res)
}

func generate(req loadRequest) (*loadResult, error) {
	conns := make([]net.Conn, req.Conns)
	for i := range conns {
		c, err := net.Dial("tcp", req.Target)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		conns[i] = c
	}
	// Warm up every connection (and the proxy's upstream leg) first.
	for _, c := range conns {
		br := bufio.NewReader(c)
		if err := roundTrip(c, br); err != nil {
			return nil, fmt.Errorf("warm-up: %w", err)
		}
	}
	var ru0 unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru0)
	start := time.Now()
	deadline := start.Add(req.Duration)
	lat := make([][]time.Duration, len(conns))
	errs := make([]int64, len(conns))
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			br := bufio.NewReader(c)
			samples := make([]time.Duration, 0, 1<<16)
			for {
				t0 := time.Now()
				if t0.After(deadline) {
					break
				}
				if err := roundTrip(c, br); err != nil {
					errs[i]++
					break
				}
				samples = append(samples, time.Since(t0))
			}
			lat[i] = samples
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	var ru1 unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru1)
	all := slices.Concat(lat...)
	slices.Sort(all)
	res := &loadResult{Requests: int64(len(all)), Elapsed: elapsed, CPU: rusageCPU(ru1) - rusageCPU(ru0)}
	for _, e := range errs {
		res.Errors += e
	}
	if len(all) > 0 {
		res.P50 = all[len(all)/2]
		res.P99 = all[len(all)*99/100]
	}
	return res, nil
}

func rusageCPU(r unix.Rusage) time.Duration {
	return time.Duration(r.Utime.Nano() + r.Stime.Nano())
}

// roundTrip sends benchRequest and reads one response with a
// Content-Length body (the upstream's, possibly re-written by the proxy).
func roundTrip(c net.Conn, br *bufio.Reader) error {
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
