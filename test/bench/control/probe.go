package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/fastpath-net/fastpath/internal/nettopo"
	"github.com/fastpath-net/fastpath/test/bench/internal/loadgen"
	"github.com/fastpath-net/fastpath/test/internal/nsproc"
)

// prober connects to VIPs from a thread inside the client namespace: every
// socket it makes is created there, so no probe can leave through the root
// namespace.
type prober struct {
	thread *nsproc.Thread
}

func newProber(ns *nettopo.NS) (*prober, error) {
	t, err := nsproc.NewThread(ns)
	if err != nil {
		return nil, err
	}
	return &prober{thread: t}, nil
}

func (p *prober) close() { p.thread.Close() }

// probeTimeout bounds one connection: a VIP nobody programmed yet answers
// at once with an unreachable, a dropped SYN costs this much.
const probeTimeout = 200 * time.Millisecond

// ask connects to vip:80 once and returns the name the backend greets with
// ("be1:8081"), or "" and the error.
func (p *prober) ask(vip netip.Addr) (name string, err error) {
	p.thread.Do(func() { name, err = askOnce(vip) })
	return name, err
}

// askOnce runs on the prober's thread.
func askOnce(vip netip.Addr) (string, error) {
	d := net.Dialer{Timeout: probeTimeout}
	c, err := d.Dial("tcp4", netip.AddrPortFrom(vip, svcPort).String())
	if err != nil {
		return "", err
	}
	// Reset instead of FIN: no TIME_WAIT piles up in the client namespace
	// however many probes a slow contender takes.
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(probeTimeout))
	return loadgen.Ask(c)
}

// probeInterval is the pause between two probes of one change: the
// resolution of the change latency.
const probeInterval = time.Millisecond

// waitPort probes vip until a backend on port answers or limit passes, and
// returns when it first did and how many probes it took.
func (p *prober) waitPort(ctx context.Context, vip netip.Addr, port int32, limit time.Duration) (seen time.Time, probes int, err error) {
	want := fmt.Sprintf(":%d", port)
	p.thread.Do(func() {
		deadline := time.Now().Add(limit)
		for {
			if err = ctx.Err(); err != nil {
				return
			}
			probes++
			name, perr := askOnce(vip)
			if perr == nil && strings.HasSuffix(name, want) {
				seen = time.Now()
				return
			}
			if time.Now().After(deadline) {
				err = fmt.Errorf("no backend on port %d answered at %s within %s (last: %q %v)", port, vip, limit, name, perr)
				return
			}
			time.Sleep(probeInterval)
		}
	})
	return seen, probes, err
}
