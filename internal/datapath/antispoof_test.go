package datapath_test

import (
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/fastpath-net/fastpath/internal/ctl"
	"github.com/fastpath-net/fastpath/internal/datapath"
	"github.com/fastpath-net/fastpath/internal/datapath/bpfobj"
	"github.com/fastpath-net/fastpath/internal/datapath/pkttest"
	"github.com/fastpath-net/fastpath/internal/datapath/policymap"
	"github.com/fastpath-net/fastpath/internal/nettopo"
	"github.com/fastpath-net/fastpath/internal/podnet"
	"github.com/fastpath-net/fastpath/internal/policy"
)

// A pod may send only from its own address (tc_lb, fp_spoofed): real TCP
// SYNs and UDP datagrams the client pod sends from the node's address or
// the server pod's, to the server pod and to the node, are dropped at its
// veth, counted (drop_spoofed) and recorded with reason source-spoofed;
// from its own address they pass. The client's veth has accept_local, as
// the agent sets it for the L7 proxy, so the node itself would take a
// datagram from its own address; with the check off (no addr4) the same
// spoofed datagrams arrive, which shows the drops are the check's.
func TestPodMaySendOnlyFromItsOwnAddress(t *testing.T) {
	e := newPolicyEnv(t, datapath.TCX, datapath.Masquerade{})
	if err := podnet.AcceptLocal(e.star.Node.Path(), e.cli.NodeIf); err != nil {
		t.Fatal(err)
	}
	ring, err := ringbuf.NewReader(e.d.Verdicts())
	if err != nil {
		t.Fatal(err)
	}
	defer ring.Close()
	srvUDP := udpListen(t, e.srv.NS, netip.AddrPortFrom(e.srv.Addr, 81))
	nodeUDP := udpListen(t, e.star.Node, netip.AddrPortFrom(e.cli.NodeIP, 81))
	e.setEndpoint(e.srv, policymap.EndpointValue(serverEP, e.srv.Addr, &policy.EndpointPolicy{Identity: serverID}))
	e.setEndpoint(e.cli, policymap.EndpointValue(clientEP, e.cli.Addr, &policy.EndpointPolicy{Identity: clientID}))

	// Its own address: TCP and UDP pass.
	mustConnect(t, e.cli.NS, netip.AddrPortFrom(e.srv.Addr, 80)).Close()
	own := netip.AddrPortFrom(e.cli.Addr, 4000)
	sendRaw(t, e.cli.NS, pkttest.UDPDatagram(pkttest.Flow{Src: own, Dst: netip.AddrPortFrom(e.srv.Addr, 81)}, []byte("own"), false))
	wantDatagram(t, srvUDP, "own")
	before := spoofedDrops(t, e.d)

	type spoof struct {
		src, dst netip.Addr
		udp      *net.UDPConn
	}
	spoofs := []spoof{
		{e.cli.NodeIP, e.srv.Addr, srvUDP},    // the node's address, to another pod
		{e.srv.NodeIP, e.cli.NodeIP, nodeUDP}, // the node's (other) address, to the node
		{e.srv.Addr, e.cli.NodeIP, nodeUDP},   // another pod's address, to the node
	}
	for i, s := range spoofs {
		sport := uint16(5000 + i)
		sendRaw(t, e.cli.NS, pkttest.TCPSegment(pkttest.Flow{Src: netip.AddrPortFrom(s.src, sport), Dst: netip.AddrPortFrom(s.dst, 80)}, pkttest.SYN, nil))
		sendRaw(t, e.cli.NS, pkttest.UDPDatagram(pkttest.Flow{Src: netip.AddrPortFrom(s.src, sport), Dst: netip.AddrPortFrom(s.dst, 81)}, []byte("spoofed"), false))
		wantNoDatagram(t, s.udp, s.src, s.dst)
	}
	if got := spoofedDrops(t, e.d) - before; got != uint64(2*len(spoofs)) {
		t.Errorf("drop_spoofed counted %d packets, want %d", got, 2*len(spoofs))
	}
	var recs []policymap.Verdict
	for _, v := range verdictRecords(t, ring) {
		if v.Reason == policymap.ReasonSpoofed {
			recs = append(recs, v)
		}
	}
	if len(recs) != 2*len(spoofs) {
		t.Fatalf("%d source-spoofed records, want %d: %+v", len(recs), 2*len(spoofs), recs)
	}
	for i, v := range recs {
		s := spoofs[i/2]
		if v.Verdict != policymap.VerdictDrop || v.Endpoint != clientEP || v.SrcIdentity != uint32(clientID) ||
			netip.AddrFrom16(v.Saddr).Unmap() != s.src || netip.AddrFrom16(v.Daddr).Unmap() != s.dst {
			t.Errorf("record %d: %+v, want a drop of endpoint %d (identity %d) %s -> %s", i, v, clientEP, clientID, s.src, s.dst)
		}
	}

	// The check off (addr4 unknown): the same spoofed datagrams arrive.
	e.setEndpoint(e.cli, policymap.EndpointValue(clientEP, netip.Addr{}, &policy.EndpointPolicy{Identity: clientID}))
	for _, s := range spoofs {
		sendRaw(t, e.cli.NS, pkttest.UDPDatagram(pkttest.Flow{Src: netip.AddrPortFrom(s.src, 6000), Dst: netip.AddrPortFrom(s.dst, 81)}, []byte("unchecked"), false))
		wantDatagram(t, s.udp, "unchecked")
	}
}

// sendRaw sends an IPv4 packet (header included) from ns.
func sendRaw(t *testing.T, ns *nettopo.NS, pkt []byte) {
	t.Helper()
	if err := ns.SendRawIPv4(pkt); err != nil {
		t.Fatalf("send from %s: %v", ns.Name, err)
	}
}

func udpListen(t *testing.T, ns *nettopo.NS, at netip.AddrPort) *net.UDPConn {
	t.Helper()
	c, err := ns.ListenPacket("udp4", at.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.UDPConn)
}

func wantDatagram(t *testing.T, c *net.UDPConn, want string) {
	t.Helper()
	buf := make([]byte, 64)
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != want {
		t.Fatalf("at %s: %q, %v; want %q", c.LocalAddr(), buf[:n], err, want)
	}
}

func wantNoDatagram(t *testing.T, c *net.UDPConn, src, dst netip.Addr) {
	t.Helper()
	buf := make([]byte, 64)
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := c.Read(buf); err == nil {
		t.Fatalf("%s -> %s: %q arrived; want it dropped", src, dst, buf[:n])
	}
}

// spoofedDrops is fp_metrics' drop_spoofed, summed over CPUs.
func spoofedDrops(t *testing.T, d *datapath.Datapath) uint64 {
	t.Helper()
	idx := uint32(slices.Index(ctl.CounterNames, "drop_spoofed"))
	var per []bpfobj.TclbFpMetric
	if err := d.Metrics.Lookup(&idx, &per); err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, m := range per {
		n += m.Packets
	}
	return n
}

// verdictRecords reads what the ring holds now.
func verdictRecords(t *testing.T, r *ringbuf.Reader) []policymap.Verdict {
	t.Helper()
	out, err := policymap.ReadVerdicts(r, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// The source check is on exactly when something writes the addresses it
// checks against: with NetworkPolicy, and always with the L7 proxy
// (accept_local on pod veths). Without policy it is compiled out, so an
// address in fp_endpoints (none is written then) is not checked. Run with
// BPF_PROG_TEST_RUN, whose packets arrive on the loopback (ifindex 1).
func TestSourceCheckFollowsPolicy(t *testing.T) {
	pod := netip.MustParseAddr("10.0.0.9")
	spoofed := pkttest.UDPFrame(pkttest.Flow{Src: netip.MustParseAddrPort("10.0.0.1:4000"), Dst: netip.MustParseAddrPort("10.0.0.2:81")}, []byte("x"))
	own := pkttest.UDPFrame(pkttest.Flow{Src: netip.AddrPortFrom(pod, 4000), Dst: netip.MustParseAddrPort("10.0.0.2:81")}, []byte("x"))
	const pass, shot = 0xffffffff, 2 // TCX_NEXT, TC_ACT_SHOT
	for _, tc := range []struct {
		name string
		cfg  datapath.Config
		want uint32 // verdict on the spoofed frame
	}{
		{"no policy", datapath.Config{}, pass},
		{"policy", datapath.Config{Policy: true}, shot},
		{"policy and L7 proxy", datapath.Config{Policy: true, L7: true}, shot},
		{"L7 proxy", datapath.Config{L7: true}, shot},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.PinDir = tempPinDir(t)
			d, err := datapath.Load(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			eps, err := ebpf.LoadPinnedMap(filepath.Join(tc.cfg.PinDir, "maps", "fp_endpoints"), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer eps.Close()
			if err := eps.Put(uint32(1), policymap.EndpointValue(clientEP, pod, &policy.EndpointPolicy{Identity: clientID})); err != nil {
				t.Fatal(err)
			}
			prog := d.TCProgramFor(datapath.RoleInternal)
			before := spoofedDrops(t, d)
			for _, f := range []struct {
				name  string
				frame []byte
				want  uint32
			}{{"own address", own, pass}, {"spoofed", spoofed, tc.want}} {
				ret, _, err := prog.Test(f.frame)
				if err != nil {
					t.Fatal(err)
				}
				if ret != f.want {
					t.Errorf("%s: verdict %#x, want %#x", f.name, ret, f.want)
				}
			}
			wantDrops := uint64(0)
			if tc.want == shot {
				wantDrops = 1
			}
			if got := spoofedDrops(t, d) - before; got != wantDrops {
				t.Errorf("drop_spoofed moved by %d, want %d", got, wantDrops)
			}
		})
	}
}
