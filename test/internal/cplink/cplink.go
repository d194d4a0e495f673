// Package cplink joins a test's node namespace to the testenv control
// plane's namespace with a veth pair, so a proxy running inside the node
// reaches the apiserver directly: the testenv forwarder listens in the root
// namespace, out of reach from there.
package cplink

import (
	"fmt"
	"net/netip"

	"github.com/fastpath-net/fastpath/internal/nettopo"
	"github.com/fastpath-net/fastpath/internal/testenv"
)

// Subnet is the /30 of link number n (1..MaxLinks): the node's end and the
// control plane's end.
func Subnet(n int) (node, cp netip.Addr) {
	return netip.AddrFrom4([4]byte{169, 254, byte(100 + n), 2}), netip.AddrFrom4([4]byte{169, 254, byte(100 + n), 1})
}

// MaxLinks is how many links one control plane can have at once.
const MaxLinks = 8

// SANs are the control-plane ends of links 1..count; the apiserver's
// certificate must name them (testenv.Options.ExtraSANs).
func SANs(count int) []string {
	var out []string
	for n := 1; n <= count; n++ {
		_, cp := Subnet(n)
		out = append(out, cp.String())
	}
	return out
}

// Link is one node's link to the control plane.
type Link struct {
	NodeAddr     netip.Addr // the node's end
	APIServerURL string     // the apiserver, as seen from the node
}

// Add creates link number n between node (interface cp0) and env's
// namespace (interface fpc-<tag>). The apiserver listens on every address
// in its namespace, so the node reaches it at the far end of the link. The
// far end disappears with the node's namespace.
func Add(node *nettopo.NS, env *testenv.Env, n int, tag string) (Link, error) {
	if n < 1 || n > MaxLinks {
		return Link{}, fmt.Errorf("control-plane link %d: want 1..%d", n, MaxLinks)
	}
	cpNS, err := nettopo.OpenNS(env.Name)
	if err != nil {
		return Link{}, err
	}
	defer cpNS.Release()
	nodeSide, cpSide := Subnet(n)
	cpIf := "fpc-" + tag
	if err := nettopo.Veth(node, "cp0", cpNS, cpIf); err != nil {
		return Link{}, err
	}
	if err := node.AddAddr("cp0", netip.PrefixFrom(nodeSide, 30)); err != nil {
		return Link{}, err
	}
	if err := cpNS.AddAddr(cpIf, netip.PrefixFrom(cpSide, 30)); err != nil {
		return Link{}, err
	}
	return Link{NodeAddr: nodeSide, APIServerURL: fmt.Sprintf("https://%s:%d", cpSide, testenv.APIServerPort)}, nil
}

// Remove deletes node's end of its link, and with it the far end. A node
// removes it before its namespace goes: a namespace whose bind mount cannot
// be removed (another process bind-mounted /run/netns over it meanwhile)
// outlives its node, and its link's addresses must not.
func Remove(node *nettopo.NS) error {
	l, err := node.Netlink().LinkByName("cp0")
	if err != nil {
		return fmt.Errorf("control-plane link of %s: %w", node.Name, err)
	}
	return node.Netlink().LinkDel(l)
}
