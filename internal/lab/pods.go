package lab

import (
	"fmt"
	"net/netip"

	"github.com/fastpath-net/fastpath/internal/nettopo"
)

// pod is one demo pod: a network namespace on a node.
type pod struct {
	name   string
	app    string // "web" or "client"
	node   int    // 1-based
	ip     netip.Addr
	hostIf string // the node-side interface
}

// demoPods places the web backends round-robin over the nodes and the
// client on node 1, so with two nodes the client has a backend on its own
// node (web-0) and one on the other (web-1).
func demoPods(nodes int) []pod {
	var pods []pod
	perNode := map[int]int{}
	add := func(name, app string, node int) {
		perNode[node]++
		ip := podCIDR(node).Addr().As4()
		ip[3] = byte(10 + perNode[node])
		pods = append(pods, pod{name: name, app: app, node: node, ip: netip.AddrFrom4(ip), hostIf: "lxc-" + name})
	}
	for k := range 3 {
		add(fmt.Sprintf("web-%d", k), "web", k%nodes+1)
	}
	add("client", "client", 1)
	return pods
}

// gateway is every pod's default gateway, on the node's side of its veth
// (as Calico's 169.254.1.1): the same address on every host veth, so the
// pod's /32 needs no subnet of its own.
var gateway = netip.MustParseAddr("169.254.1.1")

// plumbPod creates the pod's namespace and veth: the pod has its /32 and a
// default route via the gateway; the node routes the /32 to the veth.
func plumbPod(p pod, mtu int) error {
	node, err := nettopo.OpenNS(nodeNSName(p.node))
	if err != nil {
		return err
	}
	defer node.Release()
	ns, err := nettopo.NewNS(podNSName(p.name))
	if err != nil {
		return err
	}
	defer ns.Release()
	steps := []func() error{
		func() error { return nettopo.Veth(ns, "eth0", node, p.hostIf) },
		func() error { return ns.SetMTU("eth0", mtu) },
		func() error { return node.SetMTU(p.hostIf, mtu) },
		func() error { return ns.AddAddr("eth0", netip.PrefixFrom(p.ip, 32)) },
		func() error { return ns.AddRoute(netip.PrefixFrom(gateway, 32), netip.Addr{}, "eth0") },
		func() error { return ns.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), gateway, "eth0") },
		func() error { return node.AddAddr(p.hostIf, netip.PrefixFrom(gateway, 32)) },
		func() error { return node.AddRoute(netip.PrefixFrom(p.ip, 32), netip.Addr{}, p.hostIf) },
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return fmt.Errorf("pod %s: %w", p.name, err)
		}
	}
	return nil
}
