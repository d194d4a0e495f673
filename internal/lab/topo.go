package lab

import (
	"fmt"
	"net/netip"

	"github.com/fastpath-net/fastpath/internal/nettopo"
)

// The lab's addresses. The underlay is one L2 segment (a bridge in the
// "net" namespace, which also hosts the control plane); the external client
// sits on it too, as a machine outside the cluster would.
var (
	underlay    = netip.MustParsePrefix("192.168.50.0/24")
	apiserverIP = netip.MustParseAddr("192.168.50.1")
	externalIP  = netip.MustParseAddr("192.168.50.100")
	ClusterCIDR = netip.MustParsePrefix("10.244.0.0/16")
	ServiceCIDR = netip.MustParsePrefix("10.96.0.0/16")
	// LBPool is where LoadBalancer IPs come from; the external client
	// routes it to the first node statically; the outside client behind
	// the lab's BGP router (bgp.go) reaches it through learned routes.
	LBPool = netip.MustParsePrefix("172.30.0.0/24")
	LBIP   = netip.MustParseAddr("172.30.0.10")
	// L2LBIP is a LoadBalancer IP in the underlay's own subnet: nothing
	// routes it, the client finds it by ARP, which only the node elected
	// for it answers (internal/l2announce).
	L2LBIP = netip.MustParseAddr("192.168.50.200")
)

const (
	bridgeName = "br0"
	uplink     = "eth0" // every node's and the external client's underlay interface
)

func netNSName() string       { return Base + "-net" }
func extNSName() string       { return Base + "-ext" }
func nodeNSName(i int) string { return fmt.Sprintf("%s-node%d", Base, i) }
func podNSName(pod string) string {
	return Base + "-" + pod
}

// nodeName is node i's Node name (1-based).
func nodeName(i int) string { return fmt.Sprintf("node%d", i) }

// nodeIP is node i's underlay address.
func nodeIP(i int) netip.Addr { return netip.AddrFrom4([4]byte{192, 168, 50, byte(10 + i)}) }

// podCIDR is node i's pod CIDR.
func podCIDR(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i), 0}), 24)
}

// buildUnderlay creates the net namespace with its bridge, the external
// client, and the node namespaces, each joined to the bridge. Names are
// recorded in st before anything is made, so Down finds half-built labs.
func buildUnderlay(nodes int) error {
	netNS, err := nettopo.NewNS(netNSName())
	if err != nil {
		return err
	}
	defer netNS.Release()
	if err := netNS.AddBridge(bridgeName); err != nil {
		return err
	}
	if err := netNS.AddAddr(bridgeName, netip.PrefixFrom(apiserverIP, underlay.Bits())); err != nil {
		return err
	}
	join := func(name, port string, addr netip.Addr) (*nettopo.NS, error) {
		ns, err := nettopo.NewNS(name)
		if err != nil {
			return nil, err
		}
		if err := nettopo.Veth(ns, uplink, netNS, port); err != nil {
			return ns, err
		}
		if err := netNS.SetMaster(port, bridgeName); err != nil {
			return ns, err
		}
		return ns, ns.AddAddr(uplink, netip.PrefixFrom(addr, underlay.Bits()))
	}
	ext, err := join(extNSName(), "p-ext", externalIP)
	if err != nil {
		return err
	}
	defer ext.Release()
	if err := ext.AddRoute(LBPool, nodeIP(1), uplink); err != nil {
		return err
	}
	for i := 1; i <= nodes; i++ {
		ns, err := join(nodeNSName(i), fmt.Sprintf("p-node%d", i), nodeIP(i))
		if err != nil {
			return err
		}
		err = ns.Sysctl("net/ipv4/ip_forward", "1")
		ns.Release()
		if err != nil {
			return err
		}
	}
	return buildRouter(nodes, join)
}
