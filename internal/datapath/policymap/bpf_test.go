package policymap_test

import (
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfobj"
	"github.com/fastpath-net/fastpath/internal/datapath/pkttest"
	"github.com/fastpath-net/fastpath/internal/datapath/policymap"
	"github.com/fastpath-net/fastpath/internal/identity"
	"github.com/fastpath-net/fastpath/internal/policy"
	"github.com/fastpath-net/fastpath/internal/testpriv"
)

const (
	tcxNext = 0xffffffff // TCX_NEXT (-1) as the run's u32 return value
	tcShot  = 2
	// BPF_PROG_TEST_RUN runs on the loopback device: ifindex 1.
	loIfindex = 1
	epID      = 7
)

// pe is the two instances of fp_tc_policy (the pod's egress at its host
// veth's ingress, its ingress at the veth's egress) over one set of maps
// pinned in a private directory.
type pe struct {
	t                *testing.T
	egress, ingress  *ebpf.Program
	ipcache, eps     *ebpf.Map
	pol, ct, verdict *ebpf.Map
	config, metrics  *ebpf.Map
	ring             *ringbuf.Reader
}

func newPE(t *testing.T) *pe {
	t.Helper()
	testpriv.Require(t)
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/bpf", &st); err != nil || uint32(st.Type) != unix.BPF_FS_MAGIC {
		testpriv.Unavailable(t, "no bpffs at /sys/fs/bpf")
	}
	dir, err := os.MkdirTemp("/sys/fs/bpf", "fp-test-policy-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	load := func(d uint8) *bpfobj.TcpolicyObjects {
		spec, err := bpfobj.LoadTcpolicy()
		if err != nil {
			t.Fatal(err)
		}
		if err := spec.Variables[bpfobj.TcpolicyVarFpPolicyDir].Set(uint32(d)); err != nil {
			t.Fatal(err)
		}
		if err := spec.Variables[bpfobj.TcpolicyVarFpL7Dest].Set(uint32(1)); err != nil { // TestL7Redirect
			t.Fatal(err)
		}
		var objs bpfobj.TcpolicyObjects
		if err := spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: dir}}); err != nil {
			var verr *ebpf.VerifierError
			if errors.As(err, &verr) {
				t.Fatalf("load fp_tc_policy: %+v", verr)
			}
			t.Fatalf("load fp_tc_policy: %v", err)
		}
		t.Cleanup(func() { objs.Close() })
		return &objs
	}
	eg, in := load(policymap.DirEgress), load(policymap.DirIngress)
	if eg.FpPolicy.String() == "" || in.FpPolicy == nil {
		t.Fatal("maps missing")
	}
	r, err := ringbuf.NewReader(eg.FpVerdicts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	p := &pe{t: t, egress: eg.FpTcPolicy, ingress: in.FpTcPolicy, ipcache: eg.FpIpcache, eps: eg.FpEndpoints,
		pol: eg.FpPolicy, ct: eg.FpPolicyCt, verdict: eg.FpVerdicts, config: eg.FpPolicyConfig, metrics: eg.FpPolicyMetrics, ring: r}
	// World for everything not more specific, as the Engine writes it.
	p.setIPCache("0.0.0.0/0", identity.WorldIPv4)
	return p
}

func (p *pe) setIPCache(prefix string, id identity.ID) {
	p.t.Helper()
	k := policymap.IPCacheKeyOf(netip.MustParsePrefix(prefix))
	if err := p.ipcache.Put(k, policymap.IPCacheValue{Identity: uint32(id)}); err != nil {
		p.t.Fatal(err)
	}
}

func (p *pe) setEndpoint(flags uint16) {
	p.t.Helper()
	if err := p.eps.Put(uint32(loIfindex), policymap.Endpoint{ID: epID, Flags: flags, Identity: 300}); err != nil {
		p.t.Fatal(err)
	}
}

func (p *pe) allow(k policy.Key, cookie uint32) {
	p.t.Helper()
	for _, pk := range policymap.PolicyKeys(epID, k) {
		if err := p.pol.Put(pk, policymap.PolicyValue{Cookie: cookie}); err != nil {
			p.t.Fatal(err)
		}
	}
}

func (p *pe) run(prog *ebpf.Program, frame []byte) uint32 {
	p.t.Helper()
	ret, err := prog.Run(&ebpf.RunOptions{Data: frame, Repeat: 1})
	if err != nil {
		p.t.Fatal(err)
	}
	return ret
}

func (p *pe) expect(prog *ebpf.Program, frame []byte, want uint32, what string) {
	p.t.Helper()
	if got := p.run(prog, frame); got != want {
		p.t.Errorf("%s: verdict %#x, want %#x", what, got, want)
	}
}

// next reads one verdict record, failing after a second.
func (p *pe) next() policymap.Verdict {
	p.t.Helper()
	p.ring.SetDeadline(time.Now().Add(time.Second))
	rec, err := p.ring.Read()
	if err != nil {
		p.t.Fatalf("verdict ring: %v", err)
	}
	return decode(p.t, rec.RawSample)
}

func decode(t *testing.T, raw []byte) policymap.Verdict {
	t.Helper()
	v, err := policymap.DecodeVerdict(raw)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func (p *pe) noRecord() {
	p.t.Helper()
	p.ring.SetDeadline(time.Now().Add(50 * time.Millisecond))
	if rec, err := p.ring.Read(); err == nil {
		p.t.Errorf("unexpected verdict record %x", rec.RawSample)
	}
}

var (
	pod    = netip.MustParseAddr("10.0.1.1") // the endpoint
	peer   = netip.MustParseAddr("10.0.2.2") // identity 400
	other  = netip.MustParseAddr("10.0.2.3") // identity 401
	remote = netip.MustParseAddr("192.0.2.9")
)

func tcp(src, dst netip.Addr, sport, dport uint16, flags uint8) []byte {
	return pkttest.TCPFrame(pkttest.Flow{Src: netip.AddrPortFrom(src, sport), Dst: netip.AddrPortFrom(dst, dport)}, flags, nil)
}

func udp(src, dst netip.Addr, sport, dport uint16) []byte {
	return pkttest.UDPFrame(pkttest.Flow{Src: netip.AddrPortFrom(src, sport), Dst: netip.AddrPortFrom(dst, dport)}, []byte("x"))
}

func TestPolicyProgram(t *testing.T) {
	p := newPE(t)
	p.setIPCache("10.0.2.2/32", 400)
	p.setIPCache("10.0.2.3/32", 401)

	// No endpoint record, then an endpoint not enforced: not our business.
	p.expect(p.egress, tcp(pod, peer, 1000, 80, pkttest.SYN), tcxNext, "no endpoint")
	p.setEndpoint(0)
	p.expect(p.egress, tcp(pod, peer, 999, 80, pkttest.SYN), tcxNext, "not enforced")
	p.noRecord()

	// Egress enforced, nothing allowed: drop with a record naming both
	// identities, the direction and the reason.
	p.setEndpoint(policymap.EnforceEgress)
	p.expect(p.egress, tcp(pod, peer, 1000, 80, pkttest.SYN), tcShot, "default deny")
	v := p.next()
	if v.Verdict != policymap.VerdictDrop || v.Reason != policymap.ReasonPolicyDenied || v.Dir != policymap.DirEgress ||
		v.SrcIdentity != 300 || v.DstIdentity != 400 || v.Dport != 80 || v.Sport != 1000 || v.Proto != 6 || v.Endpoint != epID ||
		netip.AddrFrom16(v.Daddr).Unmap() != peer || v.Peer() != 400 {
		t.Errorf("drop record %+v", v)
	}

	// Allow identity 400 on TCP 80-81 (one aligned block): 80 and 81 pass,
	// 82 does not, nor 80 to identity 401, nor UDP 80.
	p.allow(policy.Key{Identity: 400, Dir: policy.Egress, Proto: policy.TCP, Port: 80, EndPort: 81}, 11)
	p.expect(p.egress, tcp(pod, peer, 1000, 80, pkttest.SYN), tcxNext, "allowed 80")
	p.expect(p.egress, tcp(pod, peer, 1001, 81, pkttest.SYN), tcxNext, "allowed 81")
	p.expect(p.egress, tcp(pod, peer, 1002, 82, pkttest.SYN), tcShot, "82 outside the range")
	p.expect(p.egress, tcp(pod, other, 1003, 80, pkttest.SYN), tcShot, "other identity")
	p.expect(p.egress, udp(pod, peer, 1004, 80), tcShot, "udp")
	for range 3 {
		if v := p.next(); v.Verdict != policymap.VerdictDrop {
			t.Errorf("record %+v, want drops only (allows are not sampled by default)", v)
		}
	}
	p.noRecord()

	// The reply of an allowed flow passes the ingress instance though
	// ingress is enforced with no rule, and so does an ICMP error about it;
	// a new flow from the peer does not.
	p.setEndpoint(policymap.EnforceEgress | policymap.EnforceIngress)
	p.expect(p.ingress, tcp(peer, pod, 80, 1000, pkttest.SYN|pkttest.ACK), tcxNext, "reply via ct")
	p.expect(p.egress, tcp(pod, peer, 1000, 80, pkttest.ACK), tcxNext, "established via ct")
	icmp := pkttest.ICMPErrorFrame(peer, pod, 3, 3, 0, pkttest.Quote(tcpPacket(pod, peer, 1000, 80)))
	p.expect(p.ingress, icmp, tcxNext, "related ICMP error")
	unrelated := pkttest.ICMPErrorFrame(peer, pod, 3, 3, 0, pkttest.Quote(tcpPacket(pod, peer, 5555, 80)))
	p.expect(p.ingress, unrelated, tcShot, "unrelated ICMP error")
	p.expect(p.ingress, tcp(peer, pod, 2000, 8080, pkttest.SYN), tcShot, "new flow from the peer")
	p.next()
	if v := p.next(); v.Dir != policymap.DirIngress || v.SrcIdentity != 400 || v.DstIdentity != 300 || v.Dport != 8080 {
		t.Errorf("ingress drop record %+v", v)
	}

	// Any identity, every protocol (a rule without from and ports): UDP
	// from the world passes ingress. Ingress-any does not open egress.
	p.allow(policy.Key{Identity: policy.AnyIdentity, Dir: policy.Ingress, Proto: policy.AnyProto}, 12)
	p.expect(p.ingress, udp(remote, pod, 53, 5353), tcxNext, "any identity, any proto")
	p.expect(p.egress, udp(pod, remote, 5353, 53), tcxNext, "reply of that flow")
	p.expect(p.egress, udp(pod, remote, 5354, 53), tcShot, "egress to the world")
	p.next()

	// Only egress enforced: a client's connection in passes the open
	// ingress and is recorded, so the pod's replies pass the enforced
	// egress; a connection the pod opens itself does not.
	p.setEndpoint(policymap.EnforceEgress)
	p.expect(p.ingress, tcp(other, pod, 3000, 22, pkttest.SYN), tcxNext, "ingress open")
	p.expect(p.egress, tcp(pod, other, 22, 3000, pkttest.SYN|pkttest.ACK), tcxNext, "reply through enforced egress")
	p.expect(p.egress, tcp(pod, other, 22, 3001, pkttest.SYN), tcShot, "new egress flow")
	p.next()
	p.setEndpoint(policymap.EnforceEgress | policymap.EnforceIngress)

	// Sampled allows: 1 in 1 writes a record with the rule's cookie.
	if err := p.config.Put(uint32(0), policymap.PolicyConfig{AllowSample: 1}); err != nil {
		t.Fatal(err)
	}
	p.expect(p.egress, tcp(pod, peer, 1100, 81, pkttest.SYN), tcxNext, "allowed, sampled")
	if v := p.next(); v.Verdict != policymap.VerdictAllow || v.Cookie != 11 {
		t.Errorf("allow record %+v", v)
	}
}

// TestEstablishedBeforeEnforcement: flows of a pod no policy selects are
// recorded, so that once a policy selects it (both directions enforced,
// nothing allowed) they stay established, both ways, and only new flows
// are dropped. Found by the lab's truth table (TestPolicyTruthTable
// established): they were cut.
func TestEstablishedBeforeEnforcement(t *testing.T) {
	p := newPE(t)
	p.setIPCache("10.0.2.2/32", 400)
	p.setEndpoint(0)
	p.expect(p.egress, tcp(pod, peer, 1000, 80, pkttest.SYN), tcxNext, "open: the pod connects")
	p.expect(p.ingress, tcp(peer, pod, 80, 1000, pkttest.SYN|pkttest.ACK), tcxNext, "open: the reply")
	p.expect(p.ingress, udp(peer, pod, 5000, 53), tcxNext, "open: a client's datagram")
	p.noRecord()

	p.setEndpoint(policymap.EnforceEgress | policymap.EnforceIngress)
	p.expect(p.egress, tcp(pod, peer, 1000, 80, pkttest.ACK), tcxNext, "enforced: the pod's connection goes on")
	p.expect(p.ingress, tcp(peer, pod, 80, 1000, pkttest.ACK), tcxNext, "enforced: its replies too")
	p.expect(p.ingress, udp(peer, pod, 5000, 53), tcxNext, "enforced: the client's flow goes on")
	p.expect(p.egress, udp(pod, peer, 53, 5000), tcxNext, "enforced: the pod answers it")
	p.expect(p.egress, tcp(pod, peer, 1001, 80, pkttest.SYN), tcShot, "enforced: a new connection")
	p.expect(p.ingress, udp(peer, pod, 5001, 53), tcShot, "enforced: a new client flow")
}

// TestIPCacheLongestPrefix: an ipBlock with except becomes two prefixes;
// the more specific one decides, as internal/policy assumes.
func TestIPCacheLongestPrefix(t *testing.T) {
	p := newPE(t)
	p.setIPCache("10.9.0.0/16", identity.MinLocal)
	p.setIPCache("10.9.1.0/24", identity.MinLocal+1)
	p.setEndpoint(policymap.EnforceEgress)
	p.allow(policy.Key{Identity: identity.MinLocal, Dir: policy.Egress, Proto: policy.TCP, Port: 443, EndPort: 443}, 1)
	p.expect(p.egress, tcp(pod, netip.MustParseAddr("10.9.2.1"), 1, 443, pkttest.SYN), tcxNext, "inside cidr")
	p.expect(p.egress, tcp(pod, netip.MustParseAddr("10.9.1.1"), 1, 443, pkttest.SYN), tcShot, "inside except")
	if v := p.next(); v.DstIdentity != uint32(identity.MinLocal+1) {
		t.Errorf("except address resolved to %d", v.DstIdentity)
	}
	p.expect(p.egress, tcp(pod, remote, 1, 443, pkttest.SYN), tcShot, "world")
	if v := p.next(); v.DstIdentity != uint32(identity.WorldIPv4) {
		t.Errorf("world address resolved to %d", v.DstIdentity)
	}
}

func sctp(src, dst netip.Addr, sport, dport uint16) []byte {
	return pkttest.SCTPFrame(pkttest.Flow{Src: netip.AddrPortFrom(src, sport), Dst: netip.AddrPortFrom(dst, dport)}, make([]byte, 16), false)
}

func podAddr(eng *policy.Engine, n policy.PodName) (netip.Addr, bool) {
	_, ips, ok := eng.PodIdentity(n)
	if !ok || len(ips) == 0 {
		return netip.Addr{}, false
	}
	return ips[0], true
}

func tcpPacket(src, dst netip.Addr, sport, dport uint16) []byte {
	return pkttest.TCPSegment(pkttest.Flow{Src: netip.AddrPortFrom(src, sport), Dst: netip.AddrPortFrom(dst, dport)}, pkttest.SYN, nil)
}
