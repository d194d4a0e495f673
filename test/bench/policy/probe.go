package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/cilium/ebpf"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfmap"
	"github.com/fastpath-net/fastpath/internal/datapath/policymap"
	"github.com/fastpath-net/fastpath/internal/identity"
	"github.com/fastpath-net/fastpath/test/internal/nsproc"
)

// A prober is a thread inside the client pod's namespace that opens TCP
// connections: every socket is made there, so no probe leaves through the
// root namespace.
type prober = nsproc.Thread

// Probe timing. An allowed connection is set up in well under a
// millisecond between two namespaces; a denied one is a dropped SYN, which
// costs the whole timeout. denyTimeout is long: a slow but allowed
// connection must not pass for a denial.
//
// A connection whose SYN was dropped just before the change landed costs
// its whole timeout before the next probe, so the timeout is the
// resolution of "now allowed": it starts short and grows with the wait
// (a tenth of it), so a busy machine's slow connections cannot keep a
// change from ever being seen, and the resolution stays within 10 %.
const (
	openTimeoutMin = 5 * time.Millisecond
	openTimeoutMax = 100 * time.Millisecond
	denyTimeout    = 100 * time.Millisecond
	probeInterval  = time.Millisecond
)

func openTimeout(waited time.Duration) time.Duration {
	return min(max(openTimeoutMin, waited/10), openTimeoutMax)
}

// dial connects to addr once and resets the connection (no TIME_WAIT
// piles up however many probes a change takes).
func dial(addr netip.AddrPort, timeout time.Duration) error {
	d := net.Dialer{Timeout: timeout}
	c, err := d.Dial("tcp4", addr.String())
	if err != nil {
		return err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	return c.Close()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// waitOpen probes addr until a connection succeeds and returns when it
// did and how many probes it took.
func waitOpen(ctx context.Context, p *prober, addr netip.AddrPort, limit time.Duration) (seen time.Time, probes int, err error) {
	p.Do(func() {
		start := time.Now()
		deadline := start.Add(limit)
		for {
			if err = ctx.Err(); err != nil {
				return
			}
			probes++
			perr := dial(addr, openTimeout(time.Since(start)))
			if perr == nil {
				seen = time.Now()
				return
			}
			if time.Now().After(deadline) {
				err = fmt.Errorf("%s: no connection within %s (last: %v)", addr, limit, perr)
				return
			}
			time.Sleep(probeInterval)
		}
	})
	return seen, probes, err
}

// waitDenied probes addr until three connections in a row time out (a
// dropped SYN; a refusal is no policy verdict) and returns when the first
// of them started.
func waitDenied(ctx context.Context, p *prober, addr netip.AddrPort, limit time.Duration) (seen time.Time, err error) {
	p.Do(func() {
		deadline := time.Now().Add(limit)
		run := 0
		for {
			if err = ctx.Err(); err != nil {
				return
			}
			start := time.Now()
			perr := dial(addr, denyTimeout)
			switch {
			case isTimeout(perr):
				if run == 0 {
					seen = start
				}
				if run++; run == 3 {
					return
				}
				continue
			case perr != nil && !isTimeout(perr):
				err = fmt.Errorf("%s: %v (want allowed or a dropped SYN)", addr, perr)
				return
			}
			run = 0
			if time.Now().After(deadline) {
				err = fmt.Errorf("%s: still allowed after %s", addr, limit)
				return
			}
			time.Sleep(probeInterval)
		}
	})
	return seen, err
}

// ipcache reads one node's pinned fp_ipcache.
type ipcache struct {
	m *ebpf.Map
	k bpfmap.Map[policymap.IPCacheKey, policymap.IPCacheValue]
}

func openIPCache(pinDir string) (*ipcache, error) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, "maps", policymap.IPCacheMap), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("open %s's ipcache: %w", pinDir, err)
	}
	return &ipcache{m: m, k: bpfmap.NewKernel[policymap.IPCacheKey, policymap.IPCacheValue](m, policymap.IPCacheMap)}, nil
}

func (c *ipcache) close() { c.m.Close() }

// identity is what a packet from ip is judged as: the longest prefix's.
func (c *ipcache) identity(ip netip.Addr) (identity.ID, error) {
	v, ok, err := c.k.Lookup(policymap.IPCacheKeyOf(netip.PrefixFrom(ip, ip.BitLen())))
	if err != nil || !ok {
		return identity.Unknown, err
	}
	return identity.ID(v.Identity), nil
}

// identified counts the addresses of ips the node knows by a cluster
// identity (not world, not yet unknown).
func (c *ipcache) identified(ips []netip.Addr) (int, error) {
	n := 0
	for _, ip := range ips {
		id, err := c.identity(ip)
		if err != nil {
			return 0, err
		}
		if id >= identity.MinCluster && id <= identity.MaxCluster {
			n++
		}
	}
	return n, nil
}
