package tclb_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/fastpath-net/fastpath/internal/datapath/ctmap"
	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
	"github.com/fastpath-net/fastpath/internal/datapath/pkttest"
	"github.com/fastpath-net/fastpath/internal/nettopo"
)

// The benchmark's clash storm, with real sockets: one client whose few
// ephemeral ports go, one short connection after another, to several VIPs
// that share one backend; the backend closes first, so it holds each tuple
// in TIME_WAIT, and almost every new flow clashes with one of them. Each
// clash takes a port of the (here small) range; before, each such port then
// stayed held through the backend's TIME_WAIT (60 s), the range ran dry
// after 64 flows and the rest were dropped until the client's SYN
// retransmission a second later. Every connection must now be answered
// at once, with no drop and no SYN the backend refuses as old (PAWS).
func TestClashStormKeepsEveryConnectionFast(t *testing.T) {
	e := newEnv(t)
	runClashStorm(t, e, 61000, 61063, 600)
}

// The same storm with four ports for clashes in all, far fewer than the
// clashes it makes (the clash ports after the range are switched off, as
// in clashEnv): with real timestamps from the client's kernel, a clash
// flow takes over the closed flow's tuple with the client's own port
// (bpf/include/ct.h), shifting its timestamps where its SYN's are older
// than the TIME_WAIT's, so no flow needs a port of its own and none waits.
func TestClashStormTakesOverTimeWaitTuplesWithTheClientsPort(t *testing.T) {
	e := clashEnvWith(t, 61000, 61003, 0, 0)
	fwd := runClashStorm(t, e, 61000, 61003, 300)
	shifted := 0
	for i, f := range fwd {
		if f.Flags&(ctmap.SNAT|ctmap.SNATPort) != 0 {
			t.Errorf("connection %d got a port of its own: %+v", i, f)
		}
		if f.TsDelta != 0 {
			shifted++
		}
	}
	// The client's timestamps are offset per destination, so about half
	// of the takeovers need a delta; none would mean it is never tried.
	t.Logf("%d of %d connections had their timestamps shifted", shifted, len(fwd))
	if shifted == 0 {
		t.Error("no connection had its timestamps shifted")
	}
}

// runClashStorm runs the storm through e's program with the masquerade
// port range [portMin, portMax] and returns the FORWARD entry of each
// connection as it was when the connection ended.
func runClashStorm(t *testing.T, e *env, portMin, portMax uint16, conns int) []ctmap.Entry {
	t.Helper()
	const (
		vips     = 8
		backPort = 8080
	)
	cfg := lbmap.Config{SnatPortMin: portMin, SnatPortMax: portMax}
	if err := e.config.Update(uint32(0), &cfg, 0); err != nil {
		t.Fatal(err)
	}
	star, err := nettopo.NewStar("clash", "cl", "be")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { star.Close() })
	cl, be := star.Host("cl"), star.Host("be")
	// Ten ephemeral ports: each is reused within milliseconds, towards
	// another VIP most times, as the benchmark's 28,000 are within seconds.
	if err := cl.NS.Sysctl("net/ipv4/ip_local_port_range", "40000 40009"); err != nil {
		t.Fatal(err)
	}
	for _, h := range star.Hosts {
		attachIngress(t, star.Node, h.NodeIf, e.prog)
	}
	bk := backend{id: 1, addr: netip.AddrPortFrom(be.Addr, backPort)}
	var targets []netip.AddrPort
	for i := range vips {
		v := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 96, 9, byte(i + 1)}), 80)
		e.setService(v, tcp, uint32(100+i), bk)
		targets = append(targets, v)
	}

	ln, err := be.NS.Listen("tcp4", bk.addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go serveCloseFirst(ln)

	pawsBefore := tcpExt(t, be.NS, "PAWSTimewait")
	pawsEstabBefore := tcpExt(t, be.NS, "PAWSEstab")
	retransBefore := tcpExt(t, cl.NS, "TCPSynRetrans")
	var worst time.Duration
	var fwd []ctmap.Entry
	for i := range conns {
		target := targets[(i*7+i/vips)%vips]
		d, local, err := oneRequest(cl.NS, target.String())
		if err != nil {
			t.Errorf("connection %d: %v", i, err)
			break
		}
		worst = max(worst, d)
		fwd = append(fwd, e.ctEntry(ctKey(pkttest.Flow{Src: local, Dst: target}, tcp, ctmap.Forward)))
	}
	t.Logf("%d connections over %d VIPs, slowest %v", conns, vips, worst)
	// A dropped or refused SYN shows as the client's retransmission, which
	// is what made connections wait a second before; counted, not timed.
	if n := tcpExt(t, cl.NS, "TCPSynRetrans") - retransBefore; n != 0 {
		t.Errorf("the client retransmitted %d SYNs: dropped or refused", n)
	}
	m := e.metricsNow()
	if n := m[metricDropSNATNoPort].Packets; n != 0 {
		t.Errorf("%d SYNs dropped with no free port", n)
	}
	if m[metricForwardNew].Packets < uint64(conns) {
		t.Errorf("%d new flows balanced, want %d", m[metricForwardNew].Packets, conns)
	}
	if n := tcpExt(t, be.NS, "PAWSTimewait") - pawsBefore; n != 0 {
		t.Errorf("the backend refused %d SYNs into TIME_WAIT as old (PAWS)", n)
	}
	// Timestamps shifted wrong would be older than the connection's own.
	if n := tcpExt(t, be.NS, "PAWSEstab") - pawsEstabBefore; n != 0 {
		t.Errorf("the backend dropped %d segments of open connections as old (PAWS)", n)
	}
	return fwd
}

// attachIngress attaches prog at the ingress of ns's interface ifname until
// the test ends.
func attachIngress(t *testing.T, ns *nettopo.NS, ifname string, prog *ebpf.Program) {
	t.Helper()
	idx, err := ns.Ifindex(ifname)
	if err != nil {
		t.Fatal(err)
	}
	err = ns.Do(func() error {
		l, err := link.AttachTCX(link.TCXOptions{Interface: idx, Program: prog, Attach: ebpf.AttachTCXIngress})
		if err == nil {
			t.Cleanup(func() { l.Close() })
		}
		return err
	})
	if err != nil {
		t.Fatalf("attach to %s: %v", ifname, err)
	}
}

// serveCloseFirst answers each connection's 16-byte request and closes it
// first, as the benchmark's server does, so the TIME_WAIT is the backend's.
func serveCloseFirst(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			buf := make([]byte, 16)
			if _, err := io.ReadFull(c, buf); err == nil {
				_, _ = c.Write(buf)
			}
		}()
	}
}

// oneRequest connects to addr from ns, sends 16 bytes and reads the reply
// until the server closes, returning how long that took and the client's
// end of the connection.
func oneRequest(ns *nettopo.NS, addr string) (time.Duration, netip.AddrPort, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	c, err := ns.DialContext(ctx, "tcp4", addr)
	if err != nil {
		return 0, netip.AddrPort{}, err
	}
	defer c.Close()
	local := c.LocalAddr().(*net.TCPAddr).AddrPort()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte("sixteen byte req")); err != nil {
		return 0, local, err
	}
	got, err := io.ReadAll(c)
	if err != nil {
		return 0, local, err
	}
	if len(got) != 16 {
		return 0, local, fmt.Errorf("reply of %d bytes, want 16", len(got))
	}
	return time.Since(start), local, nil
}

// tcpExt reads counter name of ns's TcpExt statistics: PAWSTimewait (SYNs
// into TIME_WAIT refused because their timestamp was older than the last
// one seen), TCPSynRetrans (SYNs sent again for want of an answer).
func tcpExt(t *testing.T, ns *nettopo.NS, name string) uint64 {
	t.Helper()
	vals, err := ns.TCPExt()
	if err != nil {
		t.Fatal(err)
	}
	v, ok := vals[name]
	if !ok {
		t.Fatalf("no TcpExt %s in %s's netstat", name, ns.Name)
	}
	return v
}
