package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/fastpath-net/fastpath/internal/netnsrun"
)

// TCMode selects how the per-packet program is attached.
type TCMode string

const (
	// TCAuto uses TCX links where the kernel has them and clsact otherwise.
	TCAuto TCMode = ""
	// TCX attaches with a TCX link (Linux 6.6+), pinned under PinDir/links.
	TCX TCMode = "tcx"
	// TCClsact attaches a direct-action cls_bpf filter to a clsact qdisc.
	TCClsact TCMode = "clsact"
)

// ParseTCMode accepts "auto", "tcx" and "clsact".
func ParseTCMode(s string) (TCMode, error) {
	switch s {
	case "", "auto":
		return TCAuto, nil
	case "tcx":
		return TCX, nil
	case "clsact", "tc":
		return TCClsact, nil
	}
	return "", fmt.Errorf("tc mode %q: want auto, tcx or clsact", s)
}

// clsactPriority and clsactHandle identify fastpath's filter, so a restart
// replaces it instead of stacking a second one.
const (
	clsactPriority = 1
	clsactHandle   = 0xfa57
	filterName     = "fastpath_tc_lb"
)

// Iface names one interface in one network namespace. An empty NetNS means
// the agent's own namespace.
type Iface struct {
	NetNS string // path such as /run/netns/fp-node, or ""
	Name  string
}

func (i Iface) String() string {
	if i.NetNS == "" {
		return i.Name
	}
	return filepath.Base(i.NetNS) + "/" + i.Name
}

func (i Iface) pinName() string {
	ns := "self"
	if i.NetNS != "" {
		ns = filepath.Base(i.NetNS)
	}
	// bpffs refuses names with a dot (VLAN interfaces such as eth0.100).
	return strings.ReplaceAll("tc-ingress-"+ns+"-"+i.Name, ".", "_dot_")
}

// AttachTC attaches the load balancer for an internal interface at the
// ingress of ifc; see AttachTCRole.
func (d *Datapath) AttachTC(ifc Iface) (TCMode, error) {
	return d.AttachTCRole(ifc, RoleInternal)
}

// AttachTCRole attaches the load balancer instance of role at the ingress of
// ifc. It returns the mode used. An existing attachment of fastpath is
// replaced atomically, whatever its role was, so packets never see the
// interface without a program.
func (d *Datapath) AttachTCRole(ifc Iface, role IfaceRole) (TCMode, error) {
	return d.AttachTCMode(ifc, role, d.cfg.TC)
}

// AttachTCMode is AttachTCRole with the attach mode chosen by the caller
// instead of the datapath's configuration: the CNI attaches pod veths in a
// mode of its own (see cniserver.Config.TC).
func (d *Datapath) AttachTCMode(ifc Iface, role IfaceRole, mode TCMode) (TCMode, error) {
	prog := d.TCProgramFor(role)
	if mode == TCAuto || mode == TCX {
		err := d.attachTCX(ifc, prog)
		if err == nil {
			return TCX, nil
		}
		if mode == TCX || !errors.Is(err, ebpf.ErrNotSupported) {
			return "", fmt.Errorf("attach tcx to %s: %w", ifc, err)
		}
	}
	if err := d.attachClsact(ifc, prog); err != nil {
		return "", fmt.Errorf("attach clsact filter to %s: %w", ifc, err)
	}
	return TCClsact, nil
}

func (d *Datapath) linkPin(ifc Iface) string {
	return filepath.Join(d.cfg.PinDir, "links", ifc.pinName())
}

func (d *Datapath) attachTCX(ifc Iface, prog *ebpf.Program) error {
	return attachTCXPinned(d.linkPin(ifc), ifc, prog, ebpf.AttachTCXIngress)
}

// AttachEgress attaches prog at the TCX egress of ifc, pinned under
// pinDir/links (name tc-egress-<netns>-<ifname>); an earlier attachment
// with that pin is replaced atomically. Egress programs (the tunnel's) are
// TCX only.
func AttachEgress(pinDir string, ifc Iface, prog *ebpf.Program) error {
	if err := attachTCXPinned(EgressPin(pinDir, ifc), ifc, prog, ebpf.AttachTCXEgress); err != nil {
		return fmt.Errorf("attach tcx egress to %s: %w", ifc, err)
	}
	return nil
}

// EgressPin is where AttachEgress pins the link of ifc; removing the pin
// detaches the program.
func EgressPin(pinDir string, ifc Iface) string {
	return filepath.Join(pinDir, "links", strings.Replace(ifc.pinName(), "tc-ingress-", "tc-egress-", 1))
}

func attachTCXPinned(pin string, ifc Iface, prog *ebpf.Program, at ebpf.AttachType) error {
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		defer l.Close()
		if err := l.Update(prog); err == nil {
			return nil
		}
		// The pinned link points at an interface that was deleted and made
		// again: drop it and attach afresh.
		_ = l.Unpin()
	}
	// The kernel resolves a TCX link's ifindex in the caller's namespace.
	return netnsrun.Do(ifc.NetNS, func() error {
		iface, err := netlink.LinkByName(ifc.Name)
		if err != nil {
			return fmt.Errorf("interface %s: %w", ifc, err)
		}
		l, err := link.AttachTCX(link.TCXOptions{
			Interface: iface.Attrs().Index,
			Program:   prog,
			Attach:    at,
		})
		if err != nil {
			return err
		}
		defer l.Close()
		if err := os.MkdirAll(filepath.Dir(pin), 0o700); err != nil {
			return err
		}
		return l.Pin(pin)
	})
}

// linkAt returns a netlink handle in ifc's namespace, which the caller
// closes, and ifc's link.
func linkAt(ifc Iface) (*netlink.Handle, netlink.Link, error) {
	h, err := NetlinkAt(ifc.NetNS)
	if err != nil {
		return nil, nil, err
	}
	l, err := h.LinkByName(ifc.Name)
	if err != nil {
		h.Close()
		return nil, nil, fmt.Errorf("interface %s: %w", ifc, err)
	}
	return h, l, nil
}

func (d *Datapath) attachClsact(ifc Iface, prog *ebpf.Program) error {
	h, l, err := linkAt(ifc)
	if err != nil {
		return err
	}
	defer h.Close()
	q := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: l.Attrs().Index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
	if err := h.QdiscReplace(q); err != nil {
		return fmt.Errorf("clsact qdisc on %s: %w", ifc, err)
	}
	f := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: l.Attrs().Index,
			Parent:    netlink.HANDLE_MIN_INGRESS,
			Handle:    clsactHandle,
			Priority:  clsactPriority,
			Protocol:  unix.ETH_P_ALL,
		},
		Fd:           prog.FD(),
		Name:         filterName,
		DirectAction: true,
	}
	return h.FilterReplace(f)
}

// DetachTC removes fastpath's program from ifc, whichever way it was attached.
func (d *Datapath) DetachTC(ifc Iface) error {
	return DetachTC(d.cfg.PinDir, ifc)
}

// DetachTC removes fastpath's program from ifc using only the pins in pinDir,
// so it also works without loading the objects.
func DetachTC(pinDir string, ifc Iface) error {
	pin := filepath.Join(pinDir, "links", ifc.pinName())
	var errs []error
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		errs = append(errs, l.Unpin(), l.Close())
	}
	h, err := NetlinkAt(ifc.NetNS)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	defer h.Close()
	l, lerr := h.LinkByName(ifc.Name)
	errs = append(errs, detachPolicy(pinDir, ifc, h, l)...)
	if lerr == nil {
		f := &netlink.BpfFilter{FilterAttrs: netlink.FilterAttrs{
			LinkIndex: l.Attrs().Index, Parent: netlink.HANDLE_MIN_INGRESS,
			Handle: clsactHandle, Priority: clsactPriority, Protocol: unix.ETH_P_ALL,
		}}
		if err := h.FilterDel(f); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("delete clsact filter on %s: %w", ifc, err))
		}
	}
	return errors.Join(errs...)
}

// FirstIPv4 returns the first global unicast IPv4 address found on the
// interfaces, in order, in the namespace at nsPath ("" = own): the default
// masquerade address. Backends must route it back to this node, which holds
// for an address of the node's own interfaces.
func FirstIPv4(nsPath string, ifaces ...string) (netip.Addr, error) {
	h, err := NetlinkAt(nsPath)
	if err != nil {
		return netip.Addr{}, err
	}
	defer h.Close()
	for _, name := range ifaces {
		l, err := h.LinkByName(name)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("interface %s: %w", name, err)
		}
		addrs, err := h.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("addresses of %s: %w", name, err)
		}
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap().IsGlobalUnicast() {
				return ip.Unmap(), nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("no IPv4 address on %v", ifaces)
}

// AttachedTC lists the interfaces with a pinned TCX link under pinDir.
func AttachedTC(pinDir string) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(pinDir, "links"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if n, ok := strings.CutPrefix(e.Name(), "tc-ingress-"); ok {
			out = append(out, n)
		}
	}
	return out, nil
}

// NetlinkAt returns a netlink handle bound to the namespace at nsPath ("" =
// the caller's).
func NetlinkAt(nsPath string) (*netlink.Handle, error) {
	if nsPath == "" {
		return netlink.NewHandle()
	}
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return nil, fmt.Errorf("netns %s: %w", nsPath, err)
	}
	defer ns.Close()
	return netlink.NewHandleAt(ns)
}

// TCAttachment reports how fastpath's program is attached at the ingress of
// ifc; "" when it is not.
func (d *Datapath) TCAttachment(ifc Iface) (TCMode, error) {
	return TCAttachment(d.cfg.PinDir, ifc)
}

// TCAttachment reports how fastpath's program is attached at the ingress of
// ifc, from the pins in pinDir (TCX) and the interface's filters (clsact);
// "" when it is not.
func TCAttachment(pinDir string, ifc Iface) (TCMode, error) {
	if _, err := os.Stat(filepath.Join(pinDir, "links", ifc.pinName())); err == nil {
		return TCX, nil
	}
	h, err := NetlinkAt(ifc.NetNS)
	if err != nil {
		return "", err
	}
	defer h.Close()
	l, err := h.LinkByName(ifc.Name)
	if err != nil {
		return "", fmt.Errorf("interface %s: %w", ifc, err)
	}
	filters, err := h.FilterList(l, netlink.HANDLE_MIN_INGRESS)
	if err != nil {
		return "", fmt.Errorf("filters of %s: %w", ifc, err)
	}
	for _, f := range filters {
		if bf, ok := f.(*netlink.BpfFilter); ok && bf.Handle == clsactHandle && bf.Priority == clsactPriority {
			return TCClsact, nil
		}
	}
	return "", nil
}
