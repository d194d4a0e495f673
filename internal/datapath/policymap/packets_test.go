package policymap_test

import (
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/fastpath-net/fastpath/internal/datapath/policymap"
	"github.com/fastpath-net/fastpath/internal/identity"
	"github.com/fastpath-net/fastpath/internal/nettopo"
	"github.com/fastpath-net/fastpath/internal/policy"
)

// TestRealPackets: fp_tc_policy attached with TCX to the node-side veths of
// three "pods" (a Star of fp- namespaces: node-side veth = host veth),
// judging real TCP and UDP from the kernel's own stacks.
func TestRealPackets(t *testing.T) {
	p := newPE(t)
	ids := map[string]identity.ID{"a": 300, "b": 400, "c": 500}
	star, ifindex := policyStar(t, p, "pol", ids, "8080", "9090")
	setEP := func(name string, flags uint16) {
		t.Helper()
		id := uint16(ids[name] / 100)
		if err := p.eps.Put(ifindex[name], policymap.Endpoint{ID: id, Flags: flags, Identity: uint32(ids[name])}); err != nil {
			t.Fatal(err)
		}
	}
	allow := func(name string, k policy.Key) {
		t.Helper()
		for _, pk := range policymap.PolicyKeys(uint16(ids[name]/100), k) {
			if err := p.pol.Put(pk, policymap.PolicyValue{Cookie: 1}); err != nil {
				t.Fatal(err)
			}
		}
	}
	addr := func(name string, port int) string {
		return net.JoinHostPort(star.Host(name).Addr.String(), strconv.Itoa(port))
	}
	tcpOK := func(from, to string, port int, want bool) {
		t.Helper()
		got, err := nettopo.AskTCP(star.Host(from).NS, addr(to, port), 500*time.Millisecond)
		if ok := err == nil && got == to; ok != want {
			t.Errorf("TCP %s -> %s:%d: answered %q, err %v; want allowed=%v", from, to, port, got, err, want)
		}
	}
	udpOK := func(from, to string, port int, want bool) {
		t.Helper()
		got, _, err := nettopo.AskUDP(star.Host(from).NS, addr(to, port), 500*time.Millisecond)
		if ok := err == nil && got == to; ok != want {
			t.Errorf("UDP %s -> %s:%d: answered %q, err %v; want allowed=%v", from, to, port, got, err, want)
		}
	}

	// Nothing enforced: the programs pass everything.
	tcpOK("a", "b", 8080, true)
	tcpOK("c", "b", 9090, true)

	// b's ingress: only a, on TCP and UDP 8080.
	setEP("b", policymap.EnforceIngress)
	allow("b", policy.Key{Identity: 300, Dir: policy.Ingress, Proto: policy.TCP, Port: 8080, EndPort: 8080})
	allow("b", policy.Key{Identity: 300, Dir: policy.Ingress, Proto: policy.UDP, Port: 8080, EndPort: 8080})
	tcpOK("a", "b", 8080, true)
	udpOK("a", "b", 8080, true)
	tcpOK("a", "b", 9090, false)
	tcpOK("c", "b", 8080, false)
	udpOK("c", "b", 8080, false)
	// b may still open connections: its egress is open, replies pass its
	// enforced ingress through the flow it recorded.
	tcpOK("b", "c", 9090, true)

	// c's egress: nothing. c still serves a (replies pass), cannot dial.
	setEP("c", policymap.EnforceEgress)
	tcpOK("a", "c", 8080, true)
	tcpOK("c", "a", 8080, false)
	udpOK("c", "a", 8080, false)

	// The drop records of c's attempts name c's endpoint and identities.
	seen := false
	p.ring.SetDeadline(time.Now().Add(time.Second))
	for {
		rec, err := p.ring.Read()
		if err != nil {
			break
		}
		v := decode(t, rec.RawSample)
		if v.Endpoint == 5 && v.Dir == policymap.DirEgress && v.SrcIdentity == 500 && v.DstIdentity == 300 && v.Dport == 8080 {
			seen = true
		}
	}
	if !seen {
		t.Error("no drop record of c -> a:8080 at c's egress")
	}
}

// policyStar builds a Star of the named pods (ids' keys, sorted) with
// fp_tc_policy attached at both sides of each node-side veth, their
// addresses in the ipcache with ids, and whoami servers on ports; it
// returns the Star and the veths' ifindexes by pod.
func policyStar(t *testing.T, p *pe, tag string, ids map[string]identity.ID, ports ...string) (*nettopo.Star, map[string]uint32) {
	t.Helper()
	star, err := nettopo.NewStar(tag, slices.Sorted(maps.Keys(ids))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := star.Close(); err != nil {
			t.Errorf("remove namespaces: %v", err)
		}
	})
	ifindex := map[string]uint32{}
	for _, h := range star.Hosts {
		idx, err := star.Node.Ifindex(h.NodeIf)
		if err != nil {
			t.Fatal(err)
		}
		ifindex[h.Name] = uint32(idx)
		p.setIPCache(netip.PrefixFrom(h.Addr, 32).String(), ids[h.Name])
		attach(t, star.Node, idx, p.egress, ebpf.AttachTCXIngress) // packets the pod sends
		attach(t, star.Node, idx, p.ingress, ebpf.AttachTCXEgress) // packets to the pod
		for _, port := range ports {
			w, err := nettopo.StartWhoami(h.NS, h.Name, net.JoinHostPort(h.Addr.String(), port))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(w.Close)
		}
	}
	return star, ifindex
}

// attach puts prog on the interface with ifindex idx inside ns: TCX
// resolves the ifindex in the calling thread's namespace.
func attach(t *testing.T, ns *nettopo.NS, idx int, prog *ebpf.Program, at ebpf.AttachType) {
	t.Helper()
	var l link.Link
	err := ns.Do(func() (err error) {
		l, err = link.AttachTCX(link.TCXOptions{Interface: idx, Program: prog, Attach: at})
		return err
	})
	if err != nil {
		t.Fatalf("attach TCX: %v", err)
	}
	t.Cleanup(func() { l.Close() })
}
