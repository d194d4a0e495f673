package cni

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/fastpath-net/fastpath/internal/datapath"
	"github.com/fastpath-net/fastpath/internal/nettopo"
)

// TestAddCheckDel attaches two pods through libcni, checks their plumbing,
// pod-to-pod traffic and a Service load-balanced by the tc_lb attached to
// the client pod's host veth, then detaches them and finds nothing left.
func TestAddCheckDel(t *testing.T) {
	n := newNode(t, "10.244.7.0/24")
	n.startAgent()
	if err := n.status(); err != nil {
		t.Fatalf("STATUS with the agent running: %v", err)
	}
	client, server := n.newPod("client"), n.newPod("server")
	rc, rs := rt(client, "c-"+n.id+"-client"), rt(server, "c-"+n.id+"-server")
	resC, resS := n.mustAdd(rc), n.mustAdd(rs)
	ipC, ipS := resultIP(t, resC), resultIP(t, resS)
	if !netip.MustParsePrefix("10.244.7.0/24").Contains(ipC) || ipC == ipS {
		t.Fatalf("addresses %s and %s: want two different ones from 10.244.7.0/24", ipC, ipS)
	}
	if len(resC.IPs) != 1 || resC.IPs[0].Gateway.String() != "169.254.1.1" || resC.IPs[0].Address.Mask.String() != "ffffffff" {
		t.Fatalf("result IPs %v: want one /32 with gateway 169.254.1.1", resC.IPs)
	}
	checkPodSide(t, client, ipC)
	if mode := n.tcMode(t, resC.Interfaces[0].Name); mode != "clsact" {
		t.Fatalf("tc_lb on the client's host veth: %q, want clsact (the default without bandwidth)", mode)
	}
	for _, r := range []*libcni.RuntimeConf{rc, rs} {
		if err := n.check(r); err != nil {
			t.Fatalf("CHECK %s: %v", r.ContainerID, err)
		}
	}

	w, err := nettopo.StartWhoami(server, "server", ipS.String()+":8080")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if got, err := nettopo.AskTCP(client, ipS.String()+":8080", 3*time.Second); err != nil || got != "server" {
		t.Fatalf("pod to pod: %q, %v", got, err)
	}
	// The Service's only backend is the server pod: the client reaches it
	// through the VIP only if tc_lb on the client's host veth translates.
	n.writeServices(fmt.Sprintf(`services:
  - name: web
    namespace: demo
    clusterIP: 10.96.0.10
    ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080}]
    backends: [{address: %s}]
`, ipS))
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := nettopo.AskTCP(client, "10.96.0.10:80", time.Second)
		if err == nil && got == "server" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod to Service: %q, %v", got, err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// CHECK notices what ADD made going missing: here the server's tc_lb.
	hostS := datapath.Iface{NetNS: n.ns.Path(), Name: resS.Interfaces[0].Name}
	if err := datapath.DetachTC(n.pinDir, hostS); err != nil {
		t.Fatal(err)
	}
	wantCode(t, n.check(rs), 103, "load balancer on "+hostS.Name)

	for _, r := range []*libcni.RuntimeConf{rc, rs} {
		if err := n.del(r); err != nil {
			t.Fatalf("DEL %s: %v", r.ContainerID, err)
		}
	}
	n.assertClean()
	if _, err := client.Netlink().LinkByName("eth0"); err == nil {
		t.Fatalf("eth0 still in the client pod after DEL")
	}
}

// resultIP is the one address of an ADD result.
func resultIP(t *testing.T, r *current.Result) netip.Addr {
	t.Helper()
	if len(r.IPs) != 1 {
		t.Fatalf("result has %d addresses, want 1: %v", len(r.IPs), r)
	}
	ip, ok := netip.AddrFromSlice(r.IPs[0].Address.IP)
	if !ok {
		t.Fatalf("result address %v", r.IPs[0].Address)
	}
	return ip.Unmap()
}

// tcMode says how tc_lb is attached to the host veth: tcx, clsact or "".
func (n *node) tcMode(t *testing.T, host string) string {
	t.Helper()
	mode, err := datapath.TCAttachment(n.pinDir, datapath.Iface{NetNS: n.ns.Path(), Name: host})
	if err != nil {
		t.Fatal(err)
	}
	return string(mode)
}

// checkPodSide verifies the pod's interface: the /32, the default route via
// the link-local gateway, and the permanent neighbour entry for it.
func checkPodSide(t *testing.T, pod *nettopo.NS, ip netip.Addr) {
	t.Helper()
	h := pod.Netlink()
	l, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	addrs, _ := h.AddrList(l, netlink.FAMILY_V4)
	if len(addrs) != 1 || addrs[0].IPNet.String() != ip.String()+"/32" {
		t.Fatalf("pod addresses %v, want %s/32", addrs, ip)
	}
	routes, _ := h.RouteList(l, netlink.FAMILY_V4)
	var def bool
	for _, r := range routes {
		def = def || (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw.String() == "169.254.1.1"
	}
	if !def {
		t.Fatalf("pod routes %v: no default via 169.254.1.1", routes)
	}
	neighs, _ := h.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
	var perm bool
	for _, nb := range neighs {
		perm = perm || nb.IP.String() == "169.254.1.1" && nb.State == netlink.NUD_PERMANENT
	}
	if !perm {
		t.Fatalf("pod neighbours %v: no permanent entry for 169.254.1.1", neighs)
	}
}

// TestDualStack: with an IPv4 and an IPv6 pod CIDR, a pod gets one address
// of each, its routes via both link-local gateways, and pod-to-pod traffic
// works over IPv6 too; DEL leaves nothing.
func TestDualStack(t *testing.T) {
	n := newNode(t, "10.244.31.0/24,fd00:31::/120")
	n.startAgent()
	// IPv6 forwarding is a per-namespace switch: the node's, not the CNI's.
	if err := n.ns.Sysctl("net/ipv6/conf/all/forwarding", "1"); err != nil {
		t.Fatal(err)
	}
	a, b := n.newPod("a"), n.newPod("b")
	ra, rb := rt(a, "c-"+n.id+"-a"), rt(b, "c-"+n.id+"-b")
	resA, resB := n.mustAdd(ra), n.mustAdd(rb)
	if len(resA.IPs) != 2 || resA.IPs[1].Address.IP.To4() != nil || resA.IPs[1].Gateway.String() != "fe80::1" {
		t.Fatalf("result IPs %v: want an IPv4 and an IPv6 address, the latter with gateway fe80::1", resA.IPs)
	}
	v6B := resB.IPs[1].Address.IP.String()
	w, err := nettopo.StartWhoami(b, "b", "["+v6B+"]:8080")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if got, err := nettopo.AskTCP(a, "["+v6B+"]:8080", 3*time.Second); err != nil || got != "b" {
		t.Fatalf("pod to pod over IPv6: %q, %v", got, err)
	}
	for _, r := range []*libcni.RuntimeConf{ra, rb} {
		if err := n.check(r); err != nil {
			t.Fatalf("CHECK %s: %v", r.ContainerID, err)
		}
		if err := n.del(r); err != nil {
			t.Fatal(err)
		}
	}
	n.assertClean()
}
