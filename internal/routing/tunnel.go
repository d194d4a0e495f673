package routing

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/fastpath-net/fastpath/internal/datapath"
	"github.com/fastpath-net/fastpath/internal/datapath/bpfmap"
	"github.com/fastpath-net/fastpath/internal/datapath/bpfobj"
	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
)

const (
	// Device is the tunnel device of vxlan mode, in the node's namespace.
	Device = "fp_vxlan"
	// VXLANPort is the tunnel's UDP port (Linux's and Cilium's default, not
	// IANA's 4789, which other software on a host often holds).
	VXLANPort = 8472
)

// deviceMAC is fp_vxlan's address on every node. The device is NOARP, so a
// route through it resolves to the device's own address: with the same MAC
// on every node the receiving device takes the inner frame as its own
// (PACKET_HOST) and no node needs to know another's MAC.
var deviceMAC = net.HardwareAddr{0x02, 0xfa, 0x57, 0x00, 0x00, 0x01}

// TunnelKey and TunnelEndpoint are the Go twins of struct fp_cidr_key and
// struct fp_tunnel_endpoint (bpf/include/fastpath.h).
type TunnelKey = lbmap.CIDRKey

type TunnelEndpoint struct {
	Node lbmap.Addr
}

func tunnelKey(p netip.Prefix) TunnelKey { return lbmap.CIDRKeyFrom(p) }

// syncTunnelMap makes m hold exactly the routes.
func syncTunnelMap(m bpfmap.Map[TunnelKey, TunnelEndpoint], routes []Route) error {
	want := make(map[TunnelKey]TunnelEndpoint, len(routes))
	for _, r := range routes {
		want[tunnelKey(r.Dst)] = TunnelEndpoint{Node: lbmap.AddrFrom(r.Node)}
	}
	return bpfmap.Sync(m, want, nil)
}

// tunnelObjects is tc_tunnel with its map, which is pinned with the others.
type tunnelObjects struct {
	Prog *ebpf.Program `ebpf:"fp_tc_tunnel"`
	Map  *ebpf.Map     `ebpf:"fp_tunnel_map"`
}

func (o *tunnelObjects) Close() error {
	var errs []error
	for _, c := range []interface{ Close() error }{o.Prog, o.Map} {
		if c != nil {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}

func loadTunnel(pinDir string) (*tunnelObjects, error) {
	spec, err := bpfobj.LoadTctunnel()
	if err != nil {
		return nil, err
	}
	mapDir := filepath.Join(pinDir, "maps")
	if err := os.MkdirAll(mapDir, 0o700); err != nil {
		return nil, err
	}
	var objs tunnelObjects
	if err := spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: mapDir}}); err != nil {
		return nil, fmt.Errorf("load tc_tunnel: %w", err)
	}
	return &objs, nil
}

// ensureVXLAN creates fp_vxlan (or repairs one a previous agent left) with
// the given MTU, up, and returns its index.
func ensureVXLAN(nl *netlink.Handle, mtu int) (int, error) {
	if l, err := nl.LinkByName(Device); err == nil {
		vx, ok := l.(*netlink.Vxlan)
		if !ok || !vx.FlowBased || vx.Port != VXLANPort {
			// Not what we make: a leftover of another configuration.
			if err := nl.LinkDel(l); err != nil {
				return 0, fmt.Errorf("replace %s: %w", Device, err)
			}
		} else {
			return vx.Index, setupDevice(nl, vx, mtu)
		}
	}
	vx := &netlink.Vxlan{
		LinkAttrs: netlink.LinkAttrs{Name: Device, MTU: mtu, HardwareAddr: deviceMAC},
		FlowBased: true,
		Port:      VXLANPort,
	}
	if err := nl.LinkAdd(vx); err != nil {
		return 0, fmt.Errorf("create %s: %w", Device, err)
	}
	l, err := nl.LinkByName(Device)
	if err != nil {
		return 0, err
	}
	return l.Attrs().Index, setupDevice(nl, l, mtu)
}

func setupDevice(nl *netlink.Handle, l netlink.Link, mtu int) error {
	steps := []struct {
		what string
		fn   func() error
	}{
		{"mtu", func() error { return nl.LinkSetMTU(l, mtu) }},
		{"mac", func() error { return nl.LinkSetHardwareAddr(l, deviceMAC) }},
		{"noarp", func() error { return nl.LinkSetARPOff(l) }},
		{"up", func() error { return nl.LinkSetUp(l) }},
	}
	for _, s := range steps {
		if err := s.fn(); err != nil {
			return fmt.Errorf("%s %s: %w", Device, s.what, err)
		}
	}
	return nil
}

// removeVXLAN deletes fp_vxlan if it exists (native mode after vxlan mode):
// its routes and its egress program go with it.
func removeVXLAN(nl *netlink.Handle, pinDir string, ifc datapath.Iface) error {
	l, err := nl.LinkByName(Device)
	if err != nil {
		return nil
	}
	if err := nl.LinkDel(l); err != nil {
		return fmt.Errorf("delete %s: %w", Device, err)
	}
	if err := os.Remove(datapath.EgressPin(pinDir, ifc)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return datapath.DetachTC(pinDir, ifc)
}
