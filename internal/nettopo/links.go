package nettopo

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// LinkUp sets an interface of the namespace up.
func (n *NS) LinkUp(ifname string) error {
	l, err := n.nl.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("netns %s: link %s: %w", n.Name, ifname, err)
	}
	if err := n.nl.LinkSetUp(l); err != nil {
		return fmt.Errorf("netns %s: link %s up: %w", n.Name, ifname, err)
	}
	return nil
}

// Ifindex returns the index of an interface in the namespace.
func (n *NS) Ifindex(ifname string) (int, error) {
	l, err := n.nl.LinkByName(ifname)
	if err != nil {
		return 0, fmt.Errorf("netns %s: link %s: %w", n.Name, ifname, err)
	}
	return l.Attrs().Index, nil
}

// HardwareAddr returns the MAC address of an interface in the namespace.
func (n *NS) HardwareAddr(ifname string) (net.HardwareAddr, error) {
	l, err := n.nl.LinkByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("netns %s: link %s: %w", n.Name, ifname, err)
	}
	return l.Attrs().HardwareAddr, nil
}

// AddAddr assigns prefix (e.g. 10.0.0.1/24) to an interface.
func (n *NS) AddAddr(ifname string, prefix netip.Prefix) error {
	l, err := n.nl.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("netns %s: link %s: %w", n.Name, ifname, err)
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: prefix.Addr().AsSlice(), Mask: net.CIDRMask(prefix.Bits(), prefix.Addr().BitLen())}}
	if err := n.nl.AddrAdd(l, a); err != nil {
		return fmt.Errorf("netns %s: addr %s on %s: %w", n.Name, prefix, ifname, err)
	}
	return nil
}

// AddRoute routes dst via gw (gw invalid: directly connected on ifname).
func (n *NS) AddRoute(dst netip.Prefix, gw netip.Addr, ifname string) error {
	l, err := n.nl.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("netns %s: link %s: %w", n.Name, ifname, err)
	}
	r := &netlink.Route{
		LinkIndex: l.Attrs().Index,
		Dst:       &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), dst.Addr().BitLen())},
	}
	if gw.IsValid() {
		r.Gw = gw.AsSlice()
	} else {
		r.Scope = netlink.SCOPE_LINK
	}
	if err := n.nl.RouteAdd(r); err != nil {
		return fmt.Errorf("netns %s: route %s via %s dev %s: %w", n.Name, dst, gw, ifname, err)
	}
	return nil
}

// Veth creates a veth pair with one end, aName, in a and the other, bName,
// in b, both up. The pair is created inside a, never in the root namespace.
func Veth(a *NS, aName string, b *NS, bName string) error {
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: aName}, PeerName: bName}
	v.PeerNamespace = netlink.NsFd(int(b.handle))
	if err := a.nl.LinkAdd(v); err != nil {
		return fmt.Errorf("veth %s/%s - %s/%s: %w", a.Name, aName, b.Name, bName, err)
	}
	if err := a.LinkUp(aName); err != nil {
		return err
	}
	return b.LinkUp(bName)
}

// AddBridge creates a bridge in the namespace, up.
func (n *NS) AddBridge(name string) error {
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := n.nl.LinkAdd(br); err != nil {
		return fmt.Errorf("netns %s: bridge %s: %w", n.Name, name, err)
	}
	return n.LinkUp(name)
}

// SetMaster makes ifname a port of the bridge.
func (n *NS) SetMaster(ifname, bridge string) error {
	l, err := n.nl.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("netns %s: link %s: %w", n.Name, ifname, err)
	}
	br, err := n.nl.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("netns %s: link %s: %w", n.Name, bridge, err)
	}
	if err := n.nl.LinkSetMaster(l, br); err != nil {
		return fmt.Errorf("netns %s: %s into bridge %s: %w", n.Name, ifname, bridge, err)
	}
	return nil
}

// SetMTU sets an interface's MTU.
func (n *NS) SetMTU(ifname string, mtu int) error {
	l, err := n.nl.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("netns %s: link %s: %w", n.Name, ifname, err)
	}
	if err := n.nl.LinkSetMTU(l, mtu); err != nil {
		return fmt.Errorf("netns %s: mtu %d on %s: %w", n.Name, mtu, ifname, err)
	}
	return nil
}
