// Package podnet plumbs a pod's network namespace to its node: a veth pair
// with the pod end inside the pod, a /32 (or /128) address on it, and the
// Calico-style link-local gateway.
//
// The pod routes everything to 169.254.1.1 (fe80::1 for IPv6), and a
// permanent neighbour entry maps that gateway to the host veth's MAC, so the
// pod never ARPs and the node needs no address on the veth and no proxy ARP.
// The node routes the pod's address to the host veth, with a permanent
// neighbour entry for the pod's MAC. Nothing here touches an interface
// other than the veth it creates.
package podnet

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/fastpath-net/fastpath/internal/datapath"
)

// Gateways are the pod's default gateways per family: link-local, never a
// real address, answered by the static neighbour entry.
var (
	Gateway4 = netip.MustParseAddr("169.254.1.1")
	Gateway6 = netip.MustParseAddr("fe80::1")
)

// HostPrefix starts every host-side veth name fastpath creates.
const HostPrefix = "fpc"

// HostIface is the host-side veth name for an attachment key: a hash, so a
// retried ADD and a DEL without state find the same interface.
func HostIface(key string) string {
	h := sha256.Sum256([]byte(key))
	return HostPrefix + hex.EncodeToString(h[:])[:11]
}

// Attachment is one pod interface to plumb.
type Attachment struct {
	NodeNS    string // node network namespace path; "" = the agent's own
	PodNS     string // pod network namespace path
	HostIface string // host veth name (HostIface)
	IfName    string // the interface's name inside the pod
	IPs       []netip.Addr
	MTU       int
}

// Result is what Setup made.
type Result struct {
	HostMAC, PodMAC net.HardwareAddr
}

// ErrNoNetNS: the pod's network namespace does not exist.
var ErrNoNetNS = errors.New("pod network namespace does not exist")

// ErrIfaceExists: the pod already has an interface of that name.
var ErrIfaceExists = errors.New("interface already exists in the pod")

// Setup creates and configures the veth pair. On error nothing stays behind.
//
// Each netlink round trip is a wait for the CPU on a busy node, so Setup
// makes few: the MACs are chosen here rather than read back, the host end
// is created up, and an existing interface is found by the create failing.
func Setup(a Attachment) (Result, error) {
	podNS, err := netns.GetFromPath(a.PodNS)
	if err != nil {
		return Result{}, fmt.Errorf("%w: %s (%v)", ErrNoNetNS, a.PodNS, err)
	}
	defer podNS.Close()
	node, err := datapath.NetlinkAt(a.NodeNS)
	if err != nil {
		return Result{}, err
	}
	defer node.Close()
	pod, err := netlink.NewHandleAt(podNS)
	if err != nil {
		return Result{}, fmt.Errorf("netlink in %s: %w", a.PodNS, err)
	}
	defer pod.Close()

	res := Result{HostMAC: randomMAC(), PodMAC: randomMAC()}
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: a.HostIface, MTU: a.MTU, HardwareAddr: res.HostMAC, Flags: net.FlagUp},
		PeerName:         a.IfName,
		PeerHardwareAddr: res.PodMAC,
		PeerNamespace:    netlink.NsFd(int(podNS)),
		PeerMTU:          uint32(a.MTU),
	}
	err = node.LinkAdd(veth)
	if errors.Is(err, unix.EEXIST) {
		if _, perr := pod.LinkByName(a.IfName); perr == nil {
			return Result{}, fmt.Errorf("%w: %s in %s", ErrIfaceExists, a.IfName, a.PodNS)
		}
		// A host veth of this name is the rest of an ADD the agent did not
		// finish (it crashed): its pod end, if any, dies with it.
		if old, lerr := node.LinkByName(a.HostIface); lerr == nil {
			_ = node.LinkDel(old)
		}
		veth.Index = 0
		err = node.LinkAdd(veth)
	}
	if err != nil {
		return Result{}, fmt.Errorf("create veth %s <-> %s in %s: %w", a.HostIface, a.IfName, a.PodNS, err)
	}
	if err := configure(node, pod, veth, a, res); err != nil {
		_ = node.LinkDel(veth)
		return Result{}, err
	}
	return res, nil
}

func configure(node, pod *netlink.Handle, host netlink.Link, a Attachment, res Result) error {
	peer, err := pod.LinkByName(a.IfName)
	if err != nil {
		return fmt.Errorf("pod interface %s: %w", a.IfName, err)
	}
	if err := pod.LinkSetUp(peer); err != nil {
		return fmt.Errorf("set %s up in the pod: %w", a.IfName, err)
	}
	for _, ip := range a.IPs {
		if err := podSide(pod, peer, ip, res.HostMAC); err != nil {
			return err
		}
	}
	if err := enableForwarding(a.NodeNS, host, a.IPs); err != nil {
		return err
	}
	for _, ip := range a.IPs {
		if err := nodeSide(node, host, ip, res.PodMAC); err != nil {
			return err
		}
	}
	return nil
}

// randomMAC is a random unicast, locally administered address.
func randomMAC() net.HardwareAddr {
	mac := make(net.HardwareAddr, 6)
	_, _ = rand.Read(mac)
	mac[0] = mac[0]&^1 | 2
	return mac
}

func gateway(ip netip.Addr) netip.Addr {
	if ip.Is4() {
		return Gateway4
	}
	return Gateway6
}

func family(ip netip.Addr) int {
	if ip.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

func hostPrefix(ip netip.Addr) *net.IPNet {
	return &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(ip.BitLen(), ip.BitLen())}
}

func podSide(pod *netlink.Handle, peer netlink.Link, ip netip.Addr, hostMAC net.HardwareAddr) error {
	idx := peer.Attrs().Index
	// IPv6: no duplicate address detection on an address only we own.
	if err := pod.AddrAdd(peer, &netlink.Addr{IPNet: hostPrefix(ip), Flags: unix.IFA_F_NODAD}); err != nil {
		return fmt.Errorf("address %s in the pod: %w", ip, err)
	}
	gw := gateway(ip)
	if gw.Is4() {
		// fe80::/64 is on the link already; 169.254.1.1 needs a route.
		if err := pod.RouteReplace(&netlink.Route{LinkIndex: idx, Dst: hostPrefix(gw), Scope: netlink.SCOPE_LINK}); err != nil {
			return fmt.Errorf("route to gateway %s in the pod: %w", gw, err)
		}
	}
	if err := pod.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: family(ip), State: netlink.NUD_PERMANENT, IP: gw.AsSlice(), HardwareAddr: hostMAC}); err != nil {
		return fmt.Errorf("neighbour %s in the pod: %w", gw, err)
	}
	def := &net.IPNet{IP: make(net.IP, ip.BitLen()/8), Mask: net.CIDRMask(0, ip.BitLen())}
	if err := pod.RouteReplace(&netlink.Route{LinkIndex: idx, Dst: def, Gw: gw.AsSlice()}); err != nil {
		return fmt.Errorf("default route via %s in the pod: %w", gw, err)
	}
	return nil
}

func nodeSide(node *netlink.Handle, host netlink.Link, ip netip.Addr, podMAC net.HardwareAddr) error {
	idx := host.Attrs().Index
	if err := node.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: family(ip), State: netlink.NUD_PERMANENT, IP: ip.AsSlice(), HardwareAddr: podMAC}); err != nil {
		return fmt.Errorf("neighbour %s on %s: %w", ip, host.Attrs().Name, err)
	}
	if err := node.RouteReplace(&netlink.Route{LinkIndex: idx, Dst: hostPrefix(ip), Scope: netlink.SCOPE_LINK}); err != nil {
		return fmt.Errorf("route %s via %s: %w", ip, host.Attrs().Name, err)
	}
	return nil
}

// Kernel constants of the IPv4 per-interface configuration in
// IFLA_AF_SPEC (linux/if_link.h, linux/ip.h); x/sys/unix does not name them.
const (
	iflaInetConf           = 1
	ipv4DevconfForwarding  = 1
	ipv4DevconfAcceptLocal = 23
)

// enableForwarding lets the node forward what the pod sends, on the host
// veth only (IPv4 decides by the receiving interface; IPv6 by the global
// switch, which belongs to the node's configuration).
func enableForwarding(nodeNS string, host netlink.Link, ips []netip.Addr) error {
	if !slices.ContainsFunc(ips, netip.Addr.Is4) {
		return nil
	}
	if err := setIPv4Conf(nodeNS, host.Attrs().Index, ipv4DevconfForwarding, 1); err != nil {
		return fmt.Errorf("enable forwarding on %s: %w", host.Attrs().Name, err)
	}
	return nil
}

// AcceptLocal lets the host veth hostIface in nodeNS take packets whose
// source is one of the node's own addresses (accept_local). The L7 proxy
// needs it: tc_policy turns a flow from the node itself to a pod whose
// ingress has HTTP rules around into the veth's TC ingress, to hand it to
// the proxy there (docs/l7.md), and the stack drops a received packet
// with a local source otherwise.
func AcceptLocal(nodeNS, hostIface string) error { return SetAcceptLocal(nodeNS, hostIface, true) }

// SetAcceptLocal turns accept_local on the host veth hostIface in nodeNS
// on or off. Off where the L7 proxy does not run: with accept_local a pod
// could send from the node's own address, which only tc_lb's source
// check stops, and that check is on only with policy (datapath.Config).
func SetAcceptLocal(nodeNS, hostIface string, on bool) error {
	node, err := datapath.NetlinkAt(nodeNS)
	if err != nil {
		return err
	}
	defer node.Close()
	l, err := node.LinkByName(hostIface)
	if err != nil {
		return fmt.Errorf("host veth %s: %w", hostIface, err)
	}
	v := uint32(0)
	if on {
		v = 1
	}
	if err := setIPv4Conf(nodeNS, l.Attrs().Index, ipv4DevconfAcceptLocal, v); err != nil {
		return fmt.Errorf("accept_local=%d on %s: %w", v, hostIface, err)
	}
	return nil
}

// setIPv4Conf sets one IPv4 per-interface setting of the interface with
// this index in nodeNS.
//
// It uses RTM_SETLINK rather than /proc/sys/net/ipv4/conf/<if>/...:
// a write there takes the RTNL lock with trylock and restarts the system
// call while another ADD holds it, so concurrent ADDs spun on it (80 % of
// the agent's CPU in a profile of 10 parallel ADDs).
func setIPv4Conf(nodeNS string, index int, attr uint16, value uint32) error {
	ns, err := netns.GetFromPath(nodeNS)
	if nodeNS == "" {
		ns, err = netns.Get()
	}
	if err != nil {
		return fmt.Errorf("node netns %s: %w", nodeNS, err)
	}
	defer ns.Close()
	sock, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", nodeNS, err)
	}
	defer sock.Close()
	req := nl.NewNetlinkRequest(unix.RTM_SETLINK, unix.NLM_F_ACK)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: {Socket: sock}}
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(index)
	req.AddData(msg)
	spec := nl.NewRtAttr(unix.IFLA_AF_SPEC, nil)
	conf := spec.AddRtAttr(unix.AF_INET, nil).AddRtAttr(iflaInetConf, nil)
	conf.AddRtAttr(int(attr), nl.Uint32Attr(value))
	req.AddData(spec)
	_, err = req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

// Teardown deletes the host veth (and with it the pod end, its addresses,
// routes and neighbours on both sides). A missing veth is not an error.
func Teardown(nodeNS, hostIface string) error {
	node, err := datapath.NetlinkAt(nodeNS)
	if err != nil {
		return err
	}
	defer node.Close()
	l, err := node.LinkByName(hostIface)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("host veth %s: %w", hostIface, err)
	}
	if err := node.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete veth %s: %w", hostIface, err)
	}
	return nil
}

// HostIfaces lists the host veths fastpath created in the node namespace.
func HostIfaces(nodeNS string) ([]string, error) {
	node, err := datapath.NetlinkAt(nodeNS)
	if err != nil {
		return nil, err
	}
	defer node.Close()
	links, err := node.LinkList()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range links {
		if _, ok := l.(*netlink.Veth); ok && len(l.Attrs().Name) == len(HostPrefix)+11 && l.Attrs().Name[:len(HostPrefix)] == HostPrefix {
			out = append(out, l.Attrs().Name)
		}
	}
	return out, nil
}

// Check reports how the plumbing of a differs from what Setup makes.
func Check(a Attachment) error {
	podNS, err := netns.GetFromPath(a.PodNS)
	if err != nil {
		return fmt.Errorf("%w: %s (%v)", ErrNoNetNS, a.PodNS, err)
	}
	defer podNS.Close()
	node, err := datapath.NetlinkAt(a.NodeNS)
	if err != nil {
		return err
	}
	defer node.Close()
	pod, err := netlink.NewHandleAt(podNS)
	if err != nil {
		return err
	}
	defer pod.Close()
	host, err := node.LinkByName(a.HostIface)
	if err != nil {
		return fmt.Errorf("host veth %s: %w", a.HostIface, err)
	}
	if host.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("host veth %s is down", a.HostIface)
	}
	peer, err := pod.LinkByName(a.IfName)
	if err != nil {
		return fmt.Errorf("pod interface %s: %w", a.IfName, err)
	}
	if peer.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("pod interface %s is down", a.IfName)
	}
	if a.MTU != 0 && peer.Attrs().MTU != a.MTU {
		return fmt.Errorf("pod interface %s has MTU %d, want %d", a.IfName, peer.Attrs().MTU, a.MTU)
	}
	for _, ip := range a.IPs {
		addrs, err := pod.AddrList(peer, family(ip))
		if err != nil {
			return err
		}
		found := false
		for _, ad := range addrs {
			got, _ := netip.AddrFromSlice(ad.IP)
			found = found || got.Unmap() == ip
		}
		if !found {
			return fmt.Errorf("pod interface %s lacks address %s", a.IfName, ip)
		}
		routes, err := node.RouteListFiltered(family(ip), &netlink.Route{Dst: hostPrefix(ip)}, netlink.RT_FILTER_DST)
		if err != nil {
			return err
		}
		if len(routes) != 1 || routes[0].LinkIndex != host.Attrs().Index {
			return fmt.Errorf("node has no route of %s to %s", ip, a.HostIface)
		}
	}
	return nil
}
