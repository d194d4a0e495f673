package datapath_test

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/fastpath-net/fastpath/internal/datapath"
	"github.com/fastpath-net/fastpath/internal/datapath/policymap"
	"github.com/fastpath-net/fastpath/internal/identity"
	"github.com/fastpath-net/fastpath/internal/loadbalancer"
	"github.com/fastpath-net/fastpath/internal/nettopo"
	"github.com/fastpath-net/fastpath/internal/policy"
)

// Identities and endpoint ids of TestPolicyChainsAfterTCLB.
const (
	serverID, clientID identity.ID = 1000, 2000
	serverEP, clientEP uint16      = 1, 2
)

// tc_policy runs after tc_lb on pod veths, in both attach modes, with real
// TCP: the server's ingress is enforced at its veth's egress; the client's
// egress at its veth's ingress after tc_lb, so a connection to a ClusterIP
// is judged by its backend's identity. Replies pass without rules
// (fp_policy_ct), and removing an allow leaves established connections
// working while new ones are dropped.
func TestPolicyChainsAfterTCLB(t *testing.T) {
	for _, mode := range []datapath.TCMode{datapath.TCX, datapath.TCClsact} {
		t.Run(string(mode), func(t *testing.T) {
			e := newPolicyEnv(t, mode, datapath.Masquerade{})
			srv, cli, m := e.srv, e.cli, e.m
			direct := netip.AddrPortFrom(srv.Addr, 80)
			vip := netip.MustParseAddrPort("10.96.0.10:8080")
			lb := loadbalancer.NewReconciler(e.d.LB, loadbalancer.ReconcilerOptions{})
			table := loadbalancer.NewTable()
			if err := table.Upsert(loadbalancer.Service{
				Name: loadbalancer.ServiceName{Namespace: "fp", Name: "srv"},
				Frontends: []loadbalancer.FrontendSpec{{
					Frontend: loadbalancer.Frontend{L4Addr: loadbalancer.L4Addr{Addr: vip.Addr(), Port: vip.Port(), Proto: loadbalancer.TCP}},
					Backends: []loadbalancer.Backend{{L4Addr: loadbalancer.L4Addr{Addr: srv.Addr, Port: 80, Proto: loadbalancer.TCP}}},
				}},
			}); err != nil {
				t.Fatal(err)
			}
			if err := lb.Sync(table); err != nil {
				t.Fatal(err)
			}

			// Nothing enforced: open.
			mustConnect(t, cli.NS, direct)
			// The server's ingress enforced, nothing allowed: dropped.
			e.setEndpoint(srv, policymap.Endpoint{ID: serverEP, Flags: policymap.EnforceIngress, Identity: uint32(serverID)})
			mustNotConnect(t, cli.NS, direct)
			// Allowed from the client's identity on TCP/80.
			allow := e.allow(serverEP, policy.Key{Identity: clientID, Dir: policy.Ingress, Proto: policy.TCP, Port: 80, EndPort: 80})
			live := mustConnect(t, cli.NS, direct)
			defer live.Close()
			// The allow removed: new connections dropped, the established one works.
			if err := m.Policy.Delete(allow); err != nil {
				t.Fatal(err)
			}
			mustNotConnect(t, cli.NS, direct)
			roundTrip(t, live)

			// The client's egress enforced: through the ClusterIP, judged by
			// the backend's identity after tc_lb's DNAT.
			e.setEndpoint(srv, policymap.Endpoint{ID: serverEP, Identity: uint32(serverID)})
			e.setEndpoint(cli, policymap.Endpoint{ID: clientEP, Flags: policymap.EnforceEgress, Identity: uint32(clientID)})
			mustNotConnect(t, cli.NS, vip)
			e.allow(clientEP, policy.Key{Identity: serverID, Dir: policy.Egress, Proto: policy.TCP, Port: 80, EndPort: 80})
			c := mustConnect(t, cli.NS, vip)
			c.Close()
		})
	}
}

// Flows tc_lb masquerades and sends itself (here: the client's subnet is
// the cluster CIDR, the server outside it) never reach tc_policy; tc_lb
// judges them with the same code: the client's egress policy drops them,
// an allow lets them through, and the server's reply passes. (Without
// tc_lb's check the drop is missed: checked by disabling it.)
func TestPolicyJudgesMasqueradedFlows(t *testing.T) {
	e := newPolicyEnv(t, datapath.TCX, datapath.Masquerade{})
	masq := datapath.Masquerade{IP: e.srv.NodeIP, ClusterCIDRs: []netip.Prefix{netip.PrefixFrom(e.cli.Addr, 24).Masked()}}
	if err := e.d.SetMasquerade(masq); err != nil {
		t.Fatal(err)
	}
	to := netip.AddrPortFrom(e.srv.Addr, 80)
	mustConnect(t, e.cli.NS, to).Close()
	e.setEndpoint(e.cli, policymap.Endpoint{ID: clientEP, Flags: policymap.EnforceEgress, Identity: uint32(clientID)})
	mustNotConnect(t, e.cli.NS, to)
	e.allow(clientEP, policy.Key{Identity: serverID, Dir: policy.Egress, Proto: policy.TCP, Port: 80, EndPort: 80})
	mustConnect(t, e.cli.NS, to).Close()
}

// policyEnv: a node namespace with a server and a client pod, tc_lb and
// tc_policy on both veths, the ipcache naming both.
type policyEnv struct {
	t        *testing.T
	d        *datapath.Datapath
	m        policymap.Maps
	star     *nettopo.Star
	srv, cli *nettopo.Host
}

func newPolicyEnv(t *testing.T, mode datapath.TCMode, masq datapath.Masquerade) *policyEnv {
	t.Helper()
	pin := tempPinDir(t)
	star, err := nettopo.NewStar("pol", "srv", "cli")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { star.Close() })
	d, err := datapath.Load(datapath.Config{PinDir: pin, TC: mode, Policy: true, Masquerade: masq, Sizes: datapath.Sizes{CT: 1024}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	e := &policyEnv{t: t, d: d, m: d.Policy().Maps(), star: star, srv: star.Hosts[0], cli: star.Hosts[1]}
	for _, h := range []*nettopo.Host{e.srv, e.cli} {
		ifc := datapath.Iface{NetNS: star.Node.Path(), Name: h.NodeIf}
		if _, err := d.AttachTCMode(ifc, datapath.RoleInternal, mode); err != nil {
			t.Fatal(err)
		}
		if err := d.AttachPolicy(ifc, mode); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := d.DetachTC(ifc); err != nil {
				t.Errorf("detach: %v", err)
			}
		})
	}
	if err := e.m.IPCache.Update(
		[]policymap.IPCacheKey{policymap.IPCacheKeyOf(netip.MustParsePrefix("0.0.0.0/0")),
			policymap.IPCacheKeyOf(netip.PrefixFrom(e.srv.Addr, 32)), policymap.IPCacheKeyOf(netip.PrefixFrom(e.cli.Addr, 32))},
		[]policymap.IPCacheValue{{Identity: uint32(identity.WorldIPv4)}, {Identity: uint32(serverID)}, {Identity: uint32(clientID)}},
	); err != nil {
		t.Fatal(err)
	}
	ln, err := e.srv.NS.Listen("tcp4", ":80")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go echo(ln)
	return e
}

// allow writes the keys of k for endpoint ep and returns them.
func (e *policyEnv) allow(ep uint16, k policy.Key) []policymap.PolicyKey {
	e.t.Helper()
	keys := policymap.PolicyKeys(ep, k)
	if err := e.m.Policy.Update(keys, make([]policymap.PolicyValue, len(keys))); err != nil {
		e.t.Fatal(err)
	}
	return keys
}

func (e *policyEnv) setEndpoint(h *nettopo.Host, ep policymap.Endpoint) {
	e.t.Helper()
	idx, err := e.star.Node.Ifindex(h.NodeIf)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.m.Endpoints.Update([]uint32{uint32(idx)}, []policymap.Endpoint{ep}); err != nil {
		e.t.Fatal(err)
	}
}

func echo(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			buf := make([]byte, 64)
			for {
				n, err := c.Read(buf)
				if err != nil {
					return
				}
				if _, err := c.Write(buf[:n]); err != nil {
					return
				}
			}
		}()
	}
}

func dial(ns *nettopo.NS, to netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := ns.Do(func() (err error) {
		c, err = net.DialTimeout("tcp4", to.String(), timeout)
		return err
	})
	return c, err
}

// mustConnect connects and echoes one message through the connection.
func mustConnect(t *testing.T, ns *nettopo.NS, to netip.AddrPort) net.Conn {
	t.Helper()
	c, err := dial(ns, to, 5*time.Second)
	if err != nil {
		t.Fatalf("connect to %s: %v; want a connection", to, err)
	}
	roundTrip(t, c)
	return c
}

// mustNotConnect wants the SYN dropped: the dial times out (a refusal
// would mean the packet reached the server).
func mustNotConnect(t *testing.T, ns *nettopo.NS, to netip.AddrPort) {
	t.Helper()
	c, err := dial(ns, to, 700*time.Millisecond)
	if err == nil {
		c.Close()
		t.Fatalf("connected to %s; want the SYN dropped", to)
	}
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("connect to %s: %v; want a timeout (dropped SYN)", to, err)
	}
}

func roundTrip(t *testing.T, c net.Conn) {
	t.Helper()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatalf("write: %v", err)
	}
	buf := make([]byte, 4)
	if _, err := c.Read(buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo: %q, %v", buf, err)
	}
}
