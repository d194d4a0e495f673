// Package l7redirect is the node's side of sending flows to the L7 proxy
// (docs/l7.md): tc_policy hands a flow's packets to the proxy's socket with
// bpf_sk_assign and marks them policymap.MarkRedirect; this package opens
// that socket (IP_TRANSPARENT, so it accepts connections to any address and
// its accepted connections keep the original destination), installs the
// policy route that delivers marked packets locally instead of forwarding
// them, and dials the upstream leg with policymap.MarkUpstream so the
// datapath neither redirects it again nor judges it as the node's traffic.
// Everything happens in the node's namespace (--netns).
package l7redirect

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfmap"
	"github.com/fastpath-net/fastpath/internal/datapath/ctmap"
	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
	"github.com/fastpath-net/fastpath/internal/datapath/policymap"
	"github.com/fastpath-net/fastpath/internal/netnsrun"
)

// RouteTable holds the one route "local 0.0.0.0/0 dev lo" that marked
// packets look up; RulePriority is the rule's place, before the main
// table's (32766).
const (
	RouteTable   = 2004
	RulePriority = 100
)

// EnsureRoute installs, in the namespace at nsPath ("" = the caller's),
// the rule "fwmark MarkRedirect/MarkMask lookup RouteTable" and the route
// "local 0.0.0.0/0 dev lo table RouteTable". Idempotent: an agent restart
// finds them in place.
func EnsureRoute(nsPath string) error {
	return netnsrun.Do(nsPath, func() error {
		h, err := netlink.NewHandle()
		if err != nil {
			return err
		}
		defer h.Close()
		lo, err := h.LinkByName("lo")
		if err != nil {
			return fmt.Errorf("l7 redirect route: %w", err)
		}
		_, all, _ := net.ParseCIDR("0.0.0.0/0")
		rt := &netlink.Route{LinkIndex: lo.Attrs().Index, Dst: all, Table: RouteTable, Type: unix.RTN_LOCAL, Scope: netlink.SCOPE_HOST}
		if err := h.RouteReplace(rt); err != nil {
			return fmt.Errorf("l7 redirect route: %w", err)
		}
		rule := netlink.NewRule()
		rule.Family = unix.AF_INET
		rule.Mark = policymap.MarkRedirect
		mask := policymap.MarkMask
		rule.Mask = &mask
		rule.Table = RouteTable
		rule.Priority = RulePriority
		rules, err := h.RuleListFiltered(unix.AF_INET, rule, netlink.RT_FILTER_MARK|netlink.RT_FILTER_MASK|netlink.RT_FILTER_TABLE)
		if err != nil {
			return fmt.Errorf("l7 redirect rule: %w", err)
		}
		if len(rules) > 0 {
			return nil
		}
		if err := h.RuleAdd(rule); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("l7 redirect rule: %w", err)
		}
		return nil
	})
}

// Listen opens the proxy's transparent listener on port (all IPv4
// addresses) inside the namespace at nsPath.
func Listen(nsPath string, port uint16) (net.Listener, error) {
	var ln net.Listener
	err := netnsrun.Do(nsPath, func() (err error) {
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			return setsockopt(c, unix.SOL_IP, unix.IP_TRANSPARENT, 1)
		}}
		ln, err = lc.Listen(context.Background(), "tcp4", fmt.Sprintf("0.0.0.0:%d", port))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("l7 proxy listener on port %d: %w", port, err)
	}
	return ln, nil
}

// Dial opens the upstream leg to addr from the namespace at nsPath, marked
// policymap.MarkUpstream.
func Dial(ctx context.Context, nsPath, addr string) (net.Conn, error) {
	var conn net.Conn
	err := netnsrun.Do(nsPath, func() (err error) {
		d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
			return setsockopt(c, unix.SOL_SOCKET, unix.SO_MARK, int(policymap.MarkUpstream))
		}}
		conn, err = d.DialContext(ctx, "tcp4", addr)
		return err
	})
	return conn, err
}

func setsockopt(c syscall.RawConn, level, opt, value int) error {
	var serr error
	if err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), level, opt, value) }); err != nil {
		return err
	}
	return serr
}

// Backend reads, from the load balancer's conntrack map, the backend of a
// TCP flow client -> frontend that tc_lb translated (the datapath hands
// such flows to the proxy with the frontend as destination); ok false when
// the flow went to no frontend.
func Backend(ct bpfmap.Map[ctmap.Key, ctmap.Entry], client, frontend netip.AddrPort) (netip.AddrPort, bool) {
	k := ctmap.Key{SAddr: lbmap.AddrFrom(client.Addr()), DAddr: lbmap.AddrFrom(frontend.Addr()),
		SPort: client.Port(), DPort: frontend.Port(), Proto: unix.IPPROTO_TCP, Dir: ctmap.Forward}
	e, ok, err := ct.Lookup(k)
	if err != nil || !ok || e.RevNatID == 0 {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(e.NatAddr.IP(), e.NatPort), true
}
