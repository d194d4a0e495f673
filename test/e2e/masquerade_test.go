package e2e

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/fastpath-net/fastpath/internal/ctl"
	"github.com/fastpath-net/fastpath/internal/datapath/bpfmap"
	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
	"github.com/fastpath-net/fastpath/internal/nettopo"
)

// peerPort is where peer servers listen: they answer every connection with
// the address they see it come from, which whoami cannot tell.
const peerPort = 9090

// startPeer runs a peer server on host's address until the test ends.
func startPeer(t *testing.T, l *lab, host string) {
	t.Helper()
	h := l.star.Host(host)
	ln, err := h.NS.Listen("tcp", fmt.Sprintf("%s:%d", h.Addr, peerPort))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s\n", c.RemoteAddr())
			c.Close()
		}
	}()
}

// askPeer connects to addr from ns and returns the source address (without
// port) the peer server saw.
func askPeer(ns *nettopo.NS, addr string) (string, error) {
	var seen string
	err := ns.Do(func() error {
		c, err := net.DialTimeout("tcp", addr, timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(timeout))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return err
		}
		host, _, err := net.SplitHostPort(strings.TrimSpace(line))
		seen = host
		return err
	})
	return seen, err
}

// wantPeer fails unless n connections from ns to addr all work and the
// peer sees them come from want.
func wantPeer(t *testing.T, who string, ns *nettopo.NS, addr, want string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		got, err := askPeer(ns, addr)
		if err != nil {
			t.Fatalf("%s: connection %d to %s: %v", who, i, addr, err)
		}
		if got != want {
			t.Fatalf("%s: connection %d to %s came from %s at the backend, want %s", who, i, addr, got, want)
		}
	}
}

// peerService is a service on vip (and externalIP, when not empty) whose
// port 81 goes to the peer servers of backends.
func (l *lab) peerService(externalIP string, backends ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "services:\n  - name: peer\n    namespace: demo\n    clusterIP: %s\n", vip)
	if externalIP != "" {
		fmt.Fprintf(&b, "    externalIPs: [%s]\n", externalIP)
	}
	fmt.Fprintf(&b, "    ports:\n      - {port: 81, protocol: TCP, targetPort: %d}\n    backends:\n", peerPort)
	for _, be := range backends {
		fmt.Fprintf(&b, "      - address: %s\n", l.backendAddr(be))
	}
	return b.String()
}

// A pod reaching itself through its service works (kube-proxy's hairpin
// masquerade): its only backend is itself, so every connection hairpins.
// Without masquerading it would get packets from its own address and never
// answer. The masquerade address is picked by the agent: the first IPv4 of
// --interfaces, the node's address towards the client.
func TestHairpinConnectionsWork(t *testing.T) {
	l := newLab(t, "be1")
	startPeer(t, l, "be1")
	l.writeServices(l.webService("be1"))
	l.startAgent()
	l.waitBackends(httpFrontend, l.backendAddr("be1")+":8080")
	be1 := l.star.Host("be1").NS
	if seen := askMany(t, be1, 10); seen["be1"] != 10 {
		t.Fatalf("be1 reaching its own service got %v; want be1 10 times", seen)
	}

	l.writeServices(l.peerService("", "be1"))
	l.waitBackends(vip+":81/TCP", l.backendAddr("be1")+":9090")
	masq := l.star.Host("client").NodeIP.String()
	wantPeer(t, "be1", be1, vip+":81", masq, 5)
	// Not hairpin: the client keeps its address.
	wantPeer(t, "client", l.client(), vip+":81", l.backendAddr("client"), 5)

	var rows []ctl.CTRow
	l.ctl(&rows, "ct", "list")
	if !hasSNAT(rows, l.backendAddr("be1"), masq) {
		t.Fatalf("fastpathctl ct list shows no masqueraded flow from be1 as %s:\n%+v", masq, rows)
	}
}

// hasSNAT reports whether a forward row from src is masqueraded as masq.
func hasSNAT(rows []ctl.CTRow, src, masq string) bool {
	for _, r := range rows {
		if r.Direction == "forward" && strings.HasPrefix(r.Source, src+":") && strings.HasPrefix(r.SNAT, masq+":") {
			return true
		}
	}
	return false
}

// Traffic from a host behind an --external-interfaces interface is
// masqueraded (externalTrafficPolicy: Cluster), so the backend sees the
// masquerade address; with externalTrafficPolicy: Local (FP_SVC_F_EXT_LOCAL)
// it sees the client. Internal clients are never masqueraded.
//
// The services file cannot say externalTrafficPolicy yet (and the
// reconciler does not map it to the flag yet): the test sets the flag in the
// map after the agent programmed it, with a resync period long enough that
// the agent does not repair it during the test.
func TestExternalTrafficIsMasqueradedUnlessExtLocal(t *testing.T) {
	// ext is a host outside the cluster; newLab gives it a whoami it never uses.
	l := newLab(t, "be1", "ext")
	startPeer(t, l, "be1")
	const extIP = "192.0.2.10"
	masq := l.star.Host("ext").NodeIP.String()
	l.extra = []string{
		"--interfaces", l.star.Host("client").NodeIf + "," + l.star.Host("be1").NodeIf,
		"--external-interfaces", l.star.Host("ext").NodeIf,
		"--masquerade-ip", masq,
		"--resync-period", "1h",
	}
	l.writeServices(l.peerService(extIP, "be1"))
	l.startAgent()
	l.waitBackends(extIP+":81/TCP", l.backendAddr("be1")+":9090")
	ext := l.star.Host("ext").NS

	wantPeer(t, "ext", ext, extIP+":81", masq, 5)
	wantPeer(t, "ext to the ClusterIP", ext, vip+":81", masq, 2)
	wantPeer(t, "client", l.client(), extIP+":81", l.backendAddr("client"), 5)
	var rows []ctl.CTRow
	l.ctl(&rows, "ct", "list")
	if !hasSNAT(rows, l.backendAddr("ext"), masq) {
		t.Fatalf("fastpathctl ct list shows no masqueraded flow from ext as %s:\n%+v", masq, rows)
	}

	l.setServiceFlag(extIP, 81, lbmap.ServiceExtLocal)
	var svcs []ctl.ServiceRow
	l.ctl(&svcs, "service", "list")
	if !hasFlag(svcs, extIP+":81/TCP", "ext-local") {
		t.Fatalf("fastpathctl service list does not show ext-local on %s:81:\n%+v", extIP, svcs)
	}
	wantPeer(t, "ext, externalTrafficPolicy: Local", ext, extIP+":81", l.backendAddr("ext"), 5)
	// The ClusterIP has no such policy: still masqueraded.
	wantPeer(t, "ext to the ClusterIP", ext, vip+":81", masq, 2)
}

// setServiceFlag sets flag on the EXTERNAL entry of addr:port/TCP in the
// pinned fp_services, as a reconciler mapping a traffic policy would.
func (l *lab) setServiceFlag(addr string, port uint16, flag uint16) {
	l.t.Helper()
	m, err := ebpf.LoadPinnedMap(filepath.Join(l.pinDir, "maps", "fp_services"), nil)
	if err != nil {
		l.t.Fatal(err)
	}
	defer m.Close()
	svcs := bpfmap.NewKernel[lbmap.ServiceKey, lbmap.ServiceValue](m, "fp_services")
	key := lbmap.ServiceKey{Addr: lbmap.AddrFrom(netip.MustParseAddr(addr)), Port: port, Proto: lbmap.ProtoTCP, Scope: lbmap.ScopeExternal}
	v, ok, err := svcs.Lookup(key)
	if err != nil || !ok {
		l.t.Fatalf("service entry %v: present %v, %v", key, ok, err)
	}
	v.Flags |= flag
	if err := svcs.Update([]lbmap.ServiceKey{key}, []lbmap.ServiceValue{v}); err != nil {
		l.t.Fatal(err)
	}
}

func hasFlag(rows []ctl.ServiceRow, frontend, flag string) bool {
	for _, r := range rows {
		if r.Frontend == frontend && r.Scope == "external" {
			for _, f := range r.Flags {
				if f == flag {
					return true
				}
			}
		}
	}
	return false
}
