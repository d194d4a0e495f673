package tclb_test

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/fastpath-net/fastpath/internal/datapath/ctmap"
	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
	"github.com/fastpath-net/fastpath/internal/datapath/pkttest"
	"github.com/fastpath-net/fastpath/internal/nettopo"
)

// The masquerade cast. The FIB namespace of masqEnv reaches 10.0.0.0/8
// through fp0, has a permanent neighbour (neighMAC) for each address in
// neighbours, and none for be2, whose MAC the kernel would resolve.
var (
	masqIP     = netip.MustParseAddr("192.168.50.1")
	neighMAC   = pkttest.MAC{0x02, 0xbe, 0, 0, 0, 0x01}
	neighbours = []netip.Addr{client.Addr(), be1.addr.Addr(), pod.Addr()}
	// pod is a backend of hairpinSvc reaching that service.
	pod        = addrPort("10.0.3.7:40000")
	podBackend = backend{id: 3, addr: addrPort("10.0.3.7:8080")}
	// localBackend is an address of the FIB namespace itself.
	localBackend = backend{id: 4, addr: addrPort("10.0.0.1:8080")}
	// unroutable lies in an unreachable route.
	unroutable = backend{id: 5, addr: addrPort("172.16.0.5:8080")}
)

const (
	portMin = 61000
	portMax = 65535
)

// masqEnv loads the instance of role, runs it in a fresh FIB namespace and
// sets the masquerade address and ports [min, max]. It returns the MAC of
// fp0, the source of frames the program forwards.
func masqEnv(t *testing.T, role uint32, min, max uint16) (*env, pkttest.MAC) {
	t.Helper()
	e := newEnvRole(t, role)
	mac := fibNamespace(t, e)
	cfg := lbmap.Config{MasqAddr: lbmap.AddrFrom(masqIP), SnatPortMin: min, SnatPortMax: max}
	if err := e.config.Update(uint32(0), &cfg, 0); err != nil {
		t.Fatal(err)
	}
	return e, mac
}

// fibNamespace creates an fp- namespace for e's runs (removed at the end)
// with a veth fp0/fp1, 10.0.0.1/8 and masqIP on fp0, forwarding on, the
// neighbours, and an unreachable route to 172.16.0.0/16.
func fibNamespace(t *testing.T, e *env) pkttest.MAC {
	t.Helper()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	ns, err := nettopo.NewNS("fp-tclb-" + hex.EncodeToString(b))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ns.Delete(); err != nil {
			t.Errorf("remove namespace: %v", err)
		}
	})
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(nettopo.Veth(ns, "fp0", ns, "fp1"))
	must(ns.AddAddr("fp0", netip.MustParsePrefix("10.0.0.1/8")))
	must(ns.AddAddr("fp0", netip.PrefixFrom(masqIP, 32)))
	must(ns.Sysctl("net/ipv4/ip_forward", "1"))
	idx, err := ns.Ifindex("fp0")
	must(err)
	for _, a := range neighbours {
		must(ns.Netlink().NeighAdd(&netlink.Neigh{
			LinkIndex: idx, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
			IP: a.AsSlice(), HardwareAddr: net.HardwareAddr(neighMAC[:]),
		}))
	}
	must(ns.Netlink().RouteAdd(&netlink.Route{
		Dst:  &net.IPNet{IP: net.IPv4(172, 16, 0, 0), Mask: net.CIDRMask(16, 32)},
		Type: unix.RTN_UNREACHABLE,
	}))
	hw, err := ns.HardwareAddr("fp0")
	must(err)
	e.ns = ns
	return pkttest.MAC(hw)
}

// sent parses a frame the program sent on and returns its source port,
// after checking the source is the masquerade address with a port in range.
func sent(t *testing.T, frame []byte, min, max uint16) uint16 {
	t.Helper()
	p, err := pkttest.Parse(frame)
	if err != nil {
		t.Fatal(err)
	}
	if p.IP.Src != masqIP || p.SrcPort < min || p.SrcPort > max {
		t.Fatalf("sent from %v, want %v with a port in %d-%d\nframe: %x", p.Src(), masqIP, min, max, frame)
	}
	return p.SrcPort
}

// masq returns the masquerade address with port.
func masq(port uint16) netip.AddrPort { return netip.AddrPortFrom(masqIP, port) }

// A pod reaching itself through its service: without SNAT it would get a
// packet from its own address. Source becomes the masquerade address, the
// packet leaves through the FIB's interface, and replies get client and VIP
// back.
func TestHairpinIsMasqueradedAndRepliesRestored(t *testing.T) {
	e, mac := masqEnv(t, roleInternal, portMin, portMax)
	e.setService(vip, tcp, revNatID, podBackend)
	self := pkttest.Flow{Src: pod, Dst: vip}

	in := pkttest.TCPFrame(self, syn, nil)
	out := e.mustRun(in, actRedirect)
	port := sent(t, out, portMin, portMax)
	toBackend := pkttest.Flow{Src: masq(port), Dst: podBackend.addr}
	wantFrame(t, out, pkttest.Forwarded(pkttest.TCPFrame(toBackend, syn, nil), neighMAC, mac))

	fwd := e.ctEntry(ctKey(self, tcp, ctmap.Forward))
	if fwd.NatAddr != lbmap.AddrFrom(podBackend.addr.Addr()) || fwd.NatPort != 8080 || fwd.Flags != ctmap.SNAT ||
		fwd.SnatAddr != lbmap.AddrFrom(masqIP) || fwd.SnatPort != port || fwd.BackendID != podBackend.id ||
		fwd.RevNatID != revNatID || fwd.Packets != 1 || fwd.Bytes != uint64(len(in)) {
		t.Errorf("FORWARD entry %+v", fwd)
	}
	repKey := ctKey(toBackend.Reverse(), tcp, ctmap.Reply)
	rep := e.ctEntry(repKey)
	if rep.NatAddr != lbmap.AddrFrom(vip.Addr()) || rep.NatPort != vip.Port() || rep.Flags != ctmap.SNAT ||
		rep.SnatAddr != lbmap.AddrFrom(pod.Addr()) || rep.SnatPort != pod.Port() || rep.RevNatID != revNatID ||
		rep.Packets != 0 {
		t.Errorf("REPLY entry %+v", rep)
	}
	if twin := ctmap.Twin(repKey, rep); twin != ctKey(self, tcp, ctmap.Forward) {
		t.Errorf("ctmap.Twin of the REPLY entry is %v", twin)
	}
	if n := e.ctLen(); n != 2 {
		t.Errorf("%d ct entries, want 2", n)
	}

	out = e.mustRun(pkttest.TCPFrame(toBackend.Reverse(), syn|ack, nil), actOK)
	wantFrame(t, out, pkttest.TCPFrame(self.Reverse(), syn|ack, nil))

	out = e.mustRun(pkttest.TCPFrame(self, ack, []byte("data")), actRedirect)
	wantFrame(t, out, pkttest.Forwarded(pkttest.TCPFrame(toBackend, ack, []byte("data")), neighMAC, mac))
	e.wantMetrics(map[int]uint64{metricForwardNew: 1, metricReplyRevNat: 1, metricForwardCT: 1})
}

// From an external interface, a service without externalTrafficPolicy:
// Local (ClusterIP included) is masqueraded, for every protocol; one with it
// keeps the client's address and goes to the stack as before.
func TestExternalTrafficIsMasqueradedUnlessExtLocal(t *testing.T) {
	local := addrPort("10.96.0.11:80")
	for _, proto := range []uint8{tcp, udp, sctp} {
		e, mac := masqEnv(t, roleExternal, portMin, portMax)
		e.setService(vip, proto, revNatID, be1)
		e.setServiceValue(local, proto, lbmap.ServiceValue{RevNatID: revNatID + 1, Flags: lbmap.ServiceLoadBalancer | lbmap.ServiceExtLocal}, be1)
		frame := func(f pkttest.Flow) []byte {
			switch proto {
			case udp:
				return pkttest.UDPFrame(f, []byte("query"))
			case sctp:
				return pkttest.SCTPFrame(f, []byte("sixteen byte chk"), false)
			}
			return pkttest.TCPFrame(f, syn, nil)
		}

		out := e.mustRun(frame(toVIP), actRedirect)
		port := sent(t, out, portMin, portMax)
		toBackend := pkttest.Flow{Src: masq(port), Dst: be1.addr}
		wantFrame(t, out, pkttest.Forwarded(frame(toBackend), neighMAC, mac))
		wantFrame(t, e.mustRun(frame(toBackend.Reverse()), actOK), frame(toVIP.Reverse()))

		out = e.mustRun(frame(to(local)), actOK)
		wantFrame(t, out, frame(to(be1.addr)))
		if f := e.ctEntry(ctKey(to(local), proto, ctmap.Forward)); f.Flags&ctmap.SNAT != 0 {
			t.Errorf("%s: ext-local flow masqueraded: %+v", lbmap.ProtoName(proto), f)
		}
		wantFrame(t, e.mustRun(frame(from(be1.addr)), actOK), frame(from(local)))
		e.wantMetrics(map[int]uint64{metricForwardNew: 2, metricReplyRevNat: 2})
	}
}

// Internal traffic that is not hairpin keeps its source, masquerade address
// or not.
func TestInternalTrafficIsNotMasqueraded(t *testing.T) {
	e, _ := masqEnv(t, roleInternal, portMin, portMax)
	e.setService(vip, tcp, revNatID, be1)
	wantFrame(t, e.mustRun(pkttest.TCPFrame(toVIP, syn, nil), actOK), pkttest.TCPFrame(to(be1.addr), syn, nil))
}

// Ports are probed linearly from a random start: with three of four ports
// of the range taken towards be1, every new flow gets the fourth whatever
// the start; with all four taken it is dropped and counted. Ports are unique
// per backend, so be2 still gets one. be2 has no neighbour entry: the
// packet goes to the kernel's neighbour resolution with its MACs as they
// were.
func TestMasqueradePortsAreProbedAndCanRunOut(t *testing.T) {
	const min, max = 61000, 61003
	e, _ := masqEnv(t, roleExternal, min, max)
	e.setService(vip, tcp, revNatID, be1)
	taken := map[ctmap.Key]ctmap.Entry{}
	for port := uint16(min); port < max; port++ {
		k := ctKey(pkttest.Flow{Src: be1.addr, Dst: masq(port)}, tcp, ctmap.Reply)
		taken[k] = ctmap.Entry{Flags: ctmap.SNAT, NatAddr: lbmap.AddrFrom(vip.Addr()), NatPort: 80, SnatPort: port}
	}
	for k, v := range taken {
		if err := e.ct.Update([]ctmap.Key{k}, []ctmap.Entry{v}); err != nil {
			t.Fatal(err)
		}
	}

	// Sixteen flows, each removed again: a probe that did not move on from
	// its random start would pass all of them with odds of 4^-16.
	for i := range uint16(16) {
		f := withSport(toVIP, 30000+i)
		out := e.mustRun(pkttest.TCPFrame(f, syn, nil), actRedirect)
		if port := sent(t, out, min, max); port != max {
			t.Fatalf("flow %d got port %d, want %d, the only free one", i, port, max)
		}
		if i < 15 {
			fwd := ctKey(f, tcp, ctmap.Forward)
			if err := e.ct.Delete([]ctmap.Key{fwd, ctmap.Twin(fwd, e.ctEntry(fwd))}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for k, v := range taken {
		if got := e.ctEntry(k); got != v {
			t.Errorf("taken port's entry %v changed: %+v", k, got)
		}
	}

	second := withSport(toVIP, client.Port()+1)
	e.mustRun(pkttest.TCPFrame(second, syn, nil), actShot)
	if _, ok, _ := e.ct.Lookup(ctKey(second, tcp, ctmap.Forward)); ok {
		t.Error("a flow without a port has a FORWARD entry")
	}
	if n := e.ctLen(); n != len(taken)+2 {
		t.Errorf("%d ct entries, want %d", n, len(taken)+2)
	}

	e.setService(vip, tcp, revNatID, be2)
	out := e.mustRun(pkttest.TCPFrame(second, syn, nil), actRedirect)
	port := sent(t, out, min, max)
	// MACs untouched: the kernel fills them in once it knows be2's.
	wantFrame(t, out, pkttest.Forwarded(pkttest.TCPFrame(pkttest.Flow{Src: masq(port), Dst: be2.addr}, syn, nil), pkttest.NodeMAC, pkttest.PeerMAC))
	e.wantMetrics(map[int]uint64{metricForwardNew: 17, metricDropSNATNoPort: 1})
}

// A reopened masqueraded flow (SYN after FIN) gives its old port back before
// taking one: with a one-port range, it gets that port again.
func TestReopenedMasqueradedFlowReusesItsPort(t *testing.T) {
	e, _ := masqEnv(t, roleExternal, 62000, 62000)
	e.setService(vip, tcp, revNatID, be1)
	e.mustRun(pkttest.TCPFrame(toVIP, syn, nil), actRedirect)
	e.mustRun(pkttest.TCPFrame(toVIP, fin|ack, nil), actRedirect)
	out := e.mustRun(pkttest.TCPFrame(toVIP, syn, nil), actRedirect)
	sent(t, out, 62000, 62000)
	if n := e.ctLen(); n != 2 {
		t.Errorf("%d ct entries after reopening, want 2", n)
	}
	e.wantMetrics(map[int]uint64{metricForwardNew: 2, metricForwardCT: 1})
}

// Where masquerading cannot apply: a backend the FIB says is local (a
// host-network backend of this node) is only DNATed, as kube-proxy does; a
// packet with TTL 1 goes to the stack untouched, which answers time
// exceeded; a backend behind an unreachable route is dropped and counted,
// with nothing recorded.
func TestMasqueradeExceptions(t *testing.T) {
	e, _ := masqEnv(t, roleExternal, portMin, portMax)
	e.setService(vip, tcp, revNatID, localBackend)
	wantFrame(t, e.mustRun(pkttest.TCPFrame(toVIP, syn, nil), actOK), pkttest.TCPFrame(to(localBackend.addr), syn, nil))
	if f := e.ctEntry(ctKey(toVIP, tcp, ctmap.Forward)); f.Flags&ctmap.SNAT != 0 {
		t.Errorf("flow to a local backend masqueraded: %+v", f)
	}

	other := withSport(toVIP, 41000)
	seg := pkttest.TCP{SrcPort: other.Src.Port(), DstPort: other.Dst.Port(), Seq: 1000, Flags: syn}.Marshal(other.Src.Addr(), other.Dst.Addr(), nil)
	ttl1 := pkttest.Ether(pkttest.NodeMAC, pkttest.PeerMAC, pkttest.EtherTypeIPv4,
		pkttest.IPv4{Src: other.Src.Addr(), Dst: other.Dst.Addr(), Proto: tcp, ID: 1, TTL: 1}.Marshal(seg))
	e.setService(vip, tcp, revNatID, be1)
	wantFrame(t, e.mustRun(ttl1, actOK), ttl1)

	e.setService(vip, tcp, revNatID, unroutable)
	e.mustRun(pkttest.TCPFrame(other, syn, nil), actShot)
	if n := e.ctLen(); n != 2 {
		t.Errorf("%d ct entries, want the 2 of the local backend's flow", n)
	}
	e.wantMetrics(map[int]uint64{metricForwardNew: 1, metricDropNoRoute: 1})
}

// ICMP errors about a masqueraded flow: one from the backend's side (or a
// router there) quotes masquerade address -> backend and reaches the client
// about client -> VIP; one the client sends about a reply reaches the
// backend about backend -> masquerade address, leaving like the flow does.
func TestICMPErrorsAboutMasqueradedFlows(t *testing.T) {
	e, mac := masqEnv(t, roleExternal, portMin, portMax)
	e.setService(vip, tcp, revNatID, be1)
	first := pkttest.TCPFrame(toVIP, syn, []byte("payload beyond the quote"))
	sentOut := e.mustRun(first, actRedirect)
	port := sent(t, sentOut, portMin, portMax)
	// What the client sent, as it left this node: the TTL one less.
	asSent := pkttest.Forwarded(first, neighMAC, mac)

	for _, c := range []struct {
		name   string
		sender netip.Addr
		want   netip.Addr // outer source after translation
	}{
		{"from the backend", be1.addr.Addr(), vip.Addr()},
		{"from a router", router, router},
	} {
		in := pkttest.ICMPErrorFrame(c.sender, masqIP, pkttest.ICMPDestUnreach, pkttest.ICMPCodeFragNeeded, mtu, ipOf(sentOut))
		out := e.mustRun(in, actOK)
		wantFrame(t, out, pkttest.ICMPErrorFrame(c.want, client.Addr(), pkttest.ICMPDestUnreach, pkttest.ICMPCodeFragNeeded, mtu, ipOf(asSent)))
	}

	backendReply := pkttest.TCPFrame(pkttest.Flow{Src: be1.addr, Dst: masq(port)}, syn|ack, []byte("a large reply"))
	seen := e.mustRun(backendReply, actOK)
	in := pkttest.ICMPErrorFrame(client.Addr(), vip.Addr(), pkttest.ICMPDestUnreach, pkttest.ICMPCodeFragNeeded, mtu, ipOf(seen))
	out := e.mustRun(in, actRedirect)
	want := pkttest.ICMPErrorFrame(masqIP, be1.addr.Addr(), pkttest.ICMPDestUnreach, pkttest.ICMPCodeFragNeeded, mtu, ipOf(backendReply))
	wantFrame(t, out, pkttest.Forwarded(want, neighMAC, mac))
	e.wantMetrics(map[int]uint64{metricForwardNew: 1, metricICMPErrRevNat: 2, metricReplyRevNat: 1, metricForwardCT: 1})
}

// A masqueraded flow's REPLY entry holds its port: it keeps the short close
// lifetime instead of lasting through the backend's TIME_WAIT, so the range
// serves as many new flows a second as before.
func TestMasqueradedFlowsReplyEntryKeepsTheShortCloseLifetime(t *testing.T) {
	e, _ := masqEnv(t, roleExternal, portMin, portMax)
	e.setService(vip, tcp, revNatID, be1)
	port := sent(t, e.mustRun(pkttest.TCPFrame(toVIP, syn, nil), actRedirect), portMin, portMax)
	back := pkttest.Flow{Src: be1.addr, Dst: masq(port)}
	before := bootNow(t)
	e.mustRun(pkttest.TCPFrame(back, fin|ack, nil), actOK)
	rep := e.ctEntry(ctKey(back, tcp, ctmap.Reply))
	if rep.Flags != ctmap.SNAT|ctmap.SeenReply|ctmap.Closing || rep.Expires > bootNow(t)+lifeTCPClose*second || rep.Expires < before+lifeTCPClose*second {
		t.Errorf("REPLY entry %+v expires in %.1fs, want %ds", rep, float64(int64(rep.Expires-before))/1e9, lifeTCPClose)
	}
}
