package cni

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/fastpath-net/fastpath/internal/nettopo"
)

// TestChainedPortmapBandwidth runs the real portmap and bandwidth plugins
// after fastpath-cni, from the conflist the agent installs with
// --cni-chained-plugins: a hostPort reaches the pod through portmap's DNAT,
// bandwidth shapes the host veth (tbf) and the pod's egress (ifb), CHECK
// passes through the chain, and DEL removes what each plugin made.
func TestChainedPortmapBandwidth(t *testing.T) {
	n := newNode(t, "10.244.14.0/24")
	n.chained = "portmap,bandwidth"
	n.startAgent()
	// The node's own address, which the hostPort is published on.
	nodeIP := netip.MustParsePrefix("192.0.2.10/32")
	if err := n.ns.AddAddr("lo", nodeIP); err != nil {
		t.Fatal(err)
	}
	server, client := n.newPod("server"), n.newPod("client")
	rs, rc := rt(server, "c-"+n.id+"-server"), rt(client, "c-"+n.id+"-client")
	rs.CapabilityArgs = map[string]any{
		"portMappings": []map[string]any{{"hostPort": 30080, "containerPort": 8080, "protocol": "tcp"}},
		"bandwidth": map[string]any{
			"ingressRate": 8_000_000, "ingressBurst": 1_000_000,
			"egressRate": 8_000_000, "egressBurst": 1_000_000,
		},
	}
	resS := n.mustAdd(rs)
	n.mustAdd(rc)
	ipS := resultIP(t, resS)
	w, err := nettopo.StartWhoami(server, "server", ipS.String()+":8080")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	hostPort := nodeIP.Addr().String() + ":30080"
	if got, err := nettopo.AskTCP(client, hostPort, 3*time.Second); err != nil || got != "server" {
		t.Fatalf("hostPort %s through portmap: %q, %v", hostPort, got, err)
	}

	host := resS.Interfaces[0].Name
	if mode := n.tcMode(t, host); mode != "tcx" {
		t.Fatalf("tc_lb on the host veth: %q, want tcx (clsact would take the ingress qdisc bandwidth needs)", mode)
	}
	qdiscs := n.qdiscTypes(t, host)
	if !strings.Contains(qdiscs, "tbf") {
		t.Fatalf("host veth %s qdiscs %s: no tbf from bandwidth", host, qdiscs)
	}
	ifbs := n.ifbs(t)
	if len(ifbs) != 1 {
		t.Fatalf("ifb devices %v: want bandwidth's one", ifbs)
	}
	if err := n.check(rs); err != nil {
		t.Fatalf("CHECK through the chain: %v", err)
	}

	if err := n.del(rs); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if ifbs := n.ifbs(t); len(ifbs) != 0 {
		t.Fatalf("ifb devices after DEL: %v", ifbs)
	}
	// With portmap's DNAT gone, the node itself answers the hostPort: no
	// listener, so the connection is refused at once.
	if _, err := nettopo.AskTCP(client, hostPort, 3*time.Second); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("hostPort after DEL: %v, want connection refused (portmap rule removed)", err)
	}
	if err := n.del(rc); err != nil {
		t.Fatal(err)
	}
	n.assertClean()
}

func (n *node) qdiscTypes(t *testing.T, ifname string) string {
	t.Helper()
	h := n.ns.Netlink()
	l, err := h.LinkByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	qs, err := h.QdiscList(l)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, q := range qs {
		types = append(types, q.Type())
	}
	return strings.Join(types, ",")
}

func (n *node) ifbs(t *testing.T) []string {
	t.Helper()
	links, err := n.ns.Netlink().LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range links {
		if _, ok := l.(*netlink.Ifb); ok {
			out = append(out, l.Attrs().Name)
		}
	}
	return out
}
