package l2announce

import (
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/fastpath-net/fastpath/internal/loadbalancer"
)

var (
	clientMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x64}
	nodeMAC   = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x0b}
	clientIP  = netip.MustParseAddr("192.168.50.100")
	lbIP      = netip.MustParseAddr("192.168.50.200")
)

func TestReplyAnswersTheAsker(t *testing.T) {
	req, ok := parseRequest(buildRequest(make([]byte, frameLen), clientMAC, clientIP, lbIP))
	if !ok || req.senderIP != clientIP || req.targetIP != lbIP || !bytes.Equal(req.senderMAC, clientMAC) || req.gratuitous() {
		t.Fatalf("request parsed as %+v ok=%v", req, ok)
	}
	reply := buildReply(make([]byte, frameLen), nodeMAC, req)
	want := []byte{
		0x02, 0, 0, 0, 0, 0x64, 0x02, 0, 0, 0, 0, 0x0b, 0x08, 0x06, // to the asker, from the node, ARP
		0, 1, 0x08, 0, 6, 4, 0, 2, // Ethernet/IPv4, reply
		0x02, 0, 0, 0, 0, 0x0b, 192, 168, 50, 200, // the LB IP is at the node
		0x02, 0, 0, 0, 0, 0x64, 192, 168, 50, 100, // to the asker
	}
	if !bytes.Equal(reply, want) {
		t.Fatalf("reply\n got % x\nwant % x", reply, want)
	}
	mac, ip, ok := parseReply(reply)
	if !ok || ip != lbIP || !bytes.Equal(mac, nodeMAC) {
		t.Fatalf("reply parsed as %s %s %v", mac, ip, ok)
	}
	if _, ok := parseRequest(reply); ok {
		t.Fatal("a reply parsed as a request: the responder would answer answers")
	}
}

func TestGratuitousIsNotAnswered(t *testing.T) {
	g := buildGratuitous(make([]byte, frameLen), nodeMAC, lbIP)
	req, ok := parseRequest(g)
	if !ok || !req.gratuitous() || req.senderIP != lbIP || !bytes.Equal(g[:6], broadcast) {
		t.Fatalf("gratuitous ARP parsed as %+v ok=%v", req, ok)
	}
}

func TestParseRejectsOtherFrames(t *testing.T) {
	good := buildRequest(make([]byte, frameLen), clientMAC, clientIP, lbIP)
	for name, mutate := range map[string]func(b []byte){
		"short":      nil,
		"ipv4 frame": func(b []byte) { b[12], b[13] = 0x08, 0x00 },
		"token ring": func(b []byte) { b[15] = 6 },
		"ipv6":       func(b []byte) { b[16], b[17] = 0x86, 0xdd },
		"hlen 8":     func(b []byte) { b[18] = 8 },
		"rarp op":    func(b []byte) { b[21] = 3 },
	} {
		b := bytes.Clone(good)
		if mutate == nil {
			b = b[:frameLen-1]
		} else {
			mutate(b)
		}
		if _, ok := parseRequest(b); ok {
			t.Errorf("%s: parsed as a request", name)
		}
	}
}

func TestEligibility(t *testing.T) {
	other := netip.MustParseAddr("192.168.50.201")
	fe := func(ip netip.Addr, typ loadbalancer.FrontendType, scope loadbalancer.Scope, states ...loadbalancer.BackendState) loadbalancer.FrontendSpec {
		f := loadbalancer.FrontendSpec{Frontend: loadbalancer.Frontend{L4Addr: loadbalancer.L4Addr{Addr: ip, Port: 80, Proto: loadbalancer.TCP}, Scope: scope, Type: typ}}
		for _, s := range states {
			f.Backends = append(f.Backends, loadbalancer.Backend{State: s})
		}
		return f
	}
	a := loadbalancer.ServiceName{Namespace: "ns", Name: "a"}
	b := loadbalancer.ServiceName{Namespace: "ns", Name: "b"}
	e := eligibility{}
	e.apply(true, []loadbalancer.Service{
		{Name: a, Frontends: []loadbalancer.FrontendSpec{
			fe(lbIP, loadbalancer.LoadBalancer, loadbalancer.ScopeExternal, loadbalancer.Terminating, loadbalancer.Active),
			fe(netip.MustParseAddr("10.96.0.1"), loadbalancer.ClusterIP, loadbalancer.ScopeExternal, loadbalancer.Active),
			fe(netip.MustParseAddr("192.168.50.9"), loadbalancer.ExternalIP, loadbalancer.ScopeExternal, loadbalancer.Active),
		}},
		// Local policy without a ready local endpoint: only terminating.
		{Name: b, Frontends: []loadbalancer.FrontendSpec{fe(other, loadbalancer.LoadBalancer, loadbalancer.ScopeExternal, loadbalancer.Terminating)}},
	}, nil)
	if got := e.ips(); len(got) != 1 || !got[lbIP] {
		t.Fatalf("eligible %v, want only %s", got, lbIP)
	}
	// b gets a ready endpoint; a goes away.
	e.apply(false, []loadbalancer.Service{{Name: b, Frontends: []loadbalancer.FrontendSpec{fe(other, loadbalancer.LoadBalancer, loadbalancer.ScopeExternal, loadbalancer.Active)}}},
		[]loadbalancer.ServiceName{a})
	if got := e.ips(); len(got) != 1 || !got[other] {
		t.Fatalf("eligible %v, want only %s", got, other)
	}
	e.apply(true, nil, nil)
	if got := e.ips(); len(got) != 0 {
		t.Fatalf("after an empty full state: eligible %v", got)
	}
}
