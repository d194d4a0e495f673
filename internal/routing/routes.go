package routing

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// nextHop is where a route sends its destination: via an underlay gateway
// (native) or into a device (vxlan).
type nextHop struct {
	gw  netip.Addr
	dev int
}

// routeDiff returns the destinations to (re)write and those to delete so
// that have becomes want.
func routeDiff(have, want map[netip.Prefix]nextHop) (upsert, del []netip.Prefix) {
	for dst, nh := range want {
		if h, ok := have[dst]; !ok || h != nh {
			upsert = append(upsert, dst)
		}
	}
	for dst := range have {
		if _, ok := want[dst]; !ok {
			del = append(del, dst)
		}
	}
	return upsert, del
}

// routeTable is the main routing table of one network namespace, as far as
// routes of RouteProtocol go.
type routeTable struct {
	nl *netlink.Handle
}

// list returns our routes in the main table.
func (t routeTable) list() (map[netip.Prefix]nextHop, error) {
	filter := &netlink.Route{Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN}
	routes, err := t.nl.RouteListFiltered(netlink.FAMILY_V4, filter, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes of protocol %d: %w", RouteProtocol, err)
	}
	out := make(map[netip.Prefix]nextHop, len(routes))
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		dst, ok := prefixOf(r.Dst)
		if !ok {
			continue
		}
		nh := nextHop{}
		if gw, ok := netip.AddrFromSlice(r.Gw); ok {
			nh.gw = gw.Unmap()
		} else {
			nh.dev = r.LinkIndex
		}
		out[dst] = nh
	}
	return out, nil
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	bits, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), bits), true
}

func (t routeTable) route(dst netip.Prefix, nh nextHop) *netlink.Route {
	r := &netlink.Route{
		Dst:      &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), dst.Addr().BitLen())},
		Protocol: RouteProtocol,
		Table:    unix.RT_TABLE_MAIN,
	}
	if nh.gw.IsValid() {
		r.Gw = nh.gw.AsSlice()
	} else {
		r.LinkIndex = nh.dev
		r.Scope = netlink.SCOPE_LINK
	}
	return r
}

// sync makes our routes equal to want and returns how many it changed.
func (t routeTable) sync(want map[netip.Prefix]nextHop) (int, error) {
	have, err := t.list()
	if err != nil {
		return 0, err
	}
	upsert, del := routeDiff(have, want)
	var errs []error
	for _, dst := range upsert {
		if err := t.nl.RouteReplace(t.route(dst, want[dst])); err != nil {
			errs = append(errs, fmt.Errorf("route %s: %w", dst, err))
		}
	}
	for _, dst := range del {
		if err := t.nl.RouteDel(t.route(dst, have[dst])); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete route %s: %w", dst, err))
		}
	}
	return len(upsert) + len(del), errors.Join(errs...)
}
