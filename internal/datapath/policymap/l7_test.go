package policymap_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fastpath-net/fastpath/internal/datapath/policymap"
	"github.com/fastpath-net/fastpath/internal/identity"
	"github.com/fastpath-net/fastpath/internal/l7redirect"
	"github.com/fastpath-net/fastpath/internal/nettopo"
	"github.com/fastpath-net/fastpath/internal/podnet"
	"github.com/fastpath-net/fastpath/internal/policy"
)

const testProxyPort = 15001

// TestL7Redirect: flows whose fp_policy entry carries FP_POLICY_F_L7 reach
// a transparent listener in the node's namespace with their original
// destination (bpf_sk_assign + the fwmark route of l7redirect), on the
// destination's ingress (decided at the client's veth) and on the client's
// egress; the marked upstream leg passes the server's enforced ingress
// without being redirected again; without a proxy port or listener such
// flows are dropped, and a new listener on the same port takes new
// connections again (a proxy restart). A flow from the node itself to a
// pod whose ingress wants the proxy for the host identity is turned around
// into the pod's veth and proxied (the veth accepting local sources).
func TestL7Redirect(t *testing.T) {
	p := newPE(t)
	ids := map[string]identity.ID{"a": 300, "b": 400}
	star, ifindex := policyStar(t, p, "l7r", ids, "8080", "9090", "7070")
	if err := l7redirect.EnsureRoute(star.Node.Path()); err != nil {
		t.Fatal(err)
	}
	if err := l7redirect.EnsureRoute(star.Node.Path()); err != nil {
		t.Fatalf("second EnsureRoute (an agent restart): %v", err)
	}
	ln := startTestProxy(t, star.Node)

	setEP := func(name string, flags uint16) {
		t.Helper()
		if err := p.eps.Put(ifindex[name], policymap.Endpoint{ID: uint16(ids[name] / 100), Flags: flags, Identity: uint32(ids[name])}); err != nil {
			t.Fatal(err)
		}
	}
	put := func(name string, k policy.Key, v policymap.PolicyValue) {
		t.Helper()
		for _, pk := range policymap.PolicyKeys(uint16(ids[name]/100), k) {
			if err := p.pol.Put(pk, v); err != nil {
				t.Fatal(err)
			}
		}
	}
	tcp := func(port uint16) policy.Key { return policy.Key{Proto: policy.TCP, Port: port, EndPort: port} }
	ask := func(from, to string, port int, want string) {
		t.Helper()
		addr := net.JoinHostPort(star.Host(to).Addr.String(), strconv.Itoa(port))
		got, err := nettopo.AskTCP(star.Host(from).NS, addr, 500*time.Millisecond)
		if want == "" {
			if err == nil {
				t.Errorf("%s -> %s: answered %q, want no connection", from, addr, got)
			}
			return
		}
		want = strings.ReplaceAll(want, "DST", addr)
		if err != nil || got != want {
			t.Errorf("%s -> %s: answered %q, err %v; want %q", from, addr, got, err, want)
		}
	}
	l7 := policymap.PolicyValue{Cookie: 7, Flags: policymap.FlagL7, ProxyPort: testProxyPort}

	// b's ingress: a on 8080 through the proxy, on 9090 at L4, on 7070
	// through a proxy this node does not have (port 0).
	setEP("b", policymap.EnforceIngress)
	setEP("a", 0)
	k := tcp(8080)
	k.Identity, k.Dir = 300, policy.Ingress
	put("b", k, l7)
	k.Port, k.EndPort = 9090, 9090
	put("b", k, policymap.PolicyValue{Cookie: 1})
	k.Port, k.EndPort = 7070, 7070
	put("b", k, policymap.PolicyValue{Cookie: 2, Flags: policymap.FlagL7})
	ask("a", "b", 8080, "proxy DST b")
	ask("a", "b", 8080, "proxy DST b") // a second connection, same path
	ask("a", "b", 9090, "b")
	ask("a", "b", 7070, "")

	// The node itself (a host-network client) to b's 8080, which b's
	// ingress lets the host identity reach through the proxy: turned
	// around into b's veth and proxied with its destination.
	p.setIPCache(netip.PrefixFrom(star.Host("b").NodeIP, 32).String(), identity.Host)
	k = tcp(8080)
	k.Identity, k.Dir = identity.Host, policy.Ingress
	put("b", k, l7)
	addr := net.JoinHostPort(star.Host("b").Addr.String(), "8080")
	if got, err := nettopo.AskTCP(star.Node, addr, 500*time.Millisecond); err == nil {
		t.Errorf("node -> %s without accept_local on b's veth: answered %q; the stack should drop the turned-around packet", addr, got)
	}
	if err := podnet.AcceptLocal(star.Node.Path(), star.Host("b").NodeIf); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if got, err := nettopo.AskTCP(star.Node, addr, 500*time.Millisecond); err != nil || got != "proxy "+addr+" b" {
			t.Errorf("node -> %s: answered %q, err %v; want %q", addr, got, err, "proxy "+addr+" b")
		}
	}

	// The proxy goes away: its flows fail (no listener); a new one on the
	// same port serves new connections.
	ln.Close()
	ask("a", "b", 8080, "")
	startTestProxy(t, star.Node)
	ask("a", "b", 8080, "proxy DST b")

	// a's egress: b's 9090 through the proxy (b's ingress allows it at L4).
	setEP("a", policymap.EnforceEgress)
	k = tcp(9090)
	k.Identity, k.Dir = 400, policy.Egress
	put("a", k, l7)
	ask("a", "b", 9090, "proxy DST b")
	// b dials a: nothing of a's egress applies to replies; a's egress
	// to b:8080 has no entry.
	ask("b", "a", 8080, "a")
	ask("a", "b", 8080, "")

}

// startTestProxy runs a minimal stand-in for the L7 proxy on the
// transparent listener: per connection it dials the original destination
// (its LocalAddr) with the upstream mark and answers "proxy <dst> <what
// the destination said first>".
func startTestProxy(t *testing.T, node *nettopo.NS) net.Listener {
	t.Helper()
	ln, err := l7redirect.Listen(node.Path(), testProxyPort)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				up, err := l7redirect.Dial(ctx, node.Path(), c.LocalAddr().String())
				if err != nil {
					fmt.Fprintf(c, "proxy %s dial: %v\n", c.LocalAddr(), err)
					return
				}
				defer up.Close()
				_ = up.SetDeadline(time.Now().Add(2 * time.Second))
				line, err := bufio.NewReader(up).ReadString('\n')
				if err != nil {
					fmt.Fprintf(c, "proxy %s read: %v\n", c.LocalAddr(), err)
					return
				}
				fmt.Fprintf(c, "proxy %s %s", c.LocalAddr(), line)
			}()
		}
	}()
	return ln
}

// TestKeysL7: entries with HTTP rules carry FlagL7 and the proxy port; the
// others do not.
func TestKeysL7(t *testing.T) {
	l7k := policy.Key{Identity: 300, Dir: policy.Ingress, Proto: policy.TCP, Port: 80, EndPort: 80}
	l4k := policy.Key{Identity: 300, Dir: policy.Ingress, Proto: policy.TCP, Port: 81, EndPort: 81}
	ref := policy.RuleRef{Policy: "fnp:x/p", Path: "spec.ingress[0]"}
	ep := &policy.EndpointPolicy{
		Entries: map[policy.Key][]policy.RuleRef{l7k: {ref}, l4k: {ref}},
		L7:      map[policy.Key]*policy.L7{l7k: {AllowAll: true, Deny: []policy.HTTPRule{{Ref: ref}}}},
	}
	rules := &policymap.Rules{ProxyPort: testProxyPort}
	got := policymap.Keys(3, ep, rules)
	for k, v := range got {
		port := uint16(k.Port[0])<<8 | uint16(k.Port[1])
		wantL7 := port == 80
		if (v.Flags&policymap.FlagL7 != 0) != wantL7 || (v.ProxyPort == testProxyPort) != wantL7 {
			t.Errorf("port %d: value %+v, want L7=%v", port, v, wantL7)
		}
	}
	if len(got) != 2 {
		t.Errorf("%d keys, want 2", len(got))
	}
}
