package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfmap"
	"github.com/fastpath-net/fastpath/internal/datapath/bpfobj"
	"github.com/fastpath-net/fastpath/internal/datapath/policymap"
)

// Policy is the loaded NetworkPolicy program (bpf/tc_policy.c): one
// instance per direction over the maps pinned with the rest of the
// datapath. A pod's egress is judged at its host veth's TC ingress, after
// tc_lb (so a Service's backend is judged, not its ClusterIP); its ingress
// at the veth's TC egress, where every packet to the pod passes.
type Policy struct {
	egress, ingress bpfobj.TcpolicyObjects
}

// clsact filters of tc_policy: the ingress one at a priority after tc_lb's
// (lower numbers run first), tc_lb returning TC_ACT_UNSPEC for what it does
// not consume so the chain goes on.
const (
	policyPriority   = clsactPriority + 1
	policyFilterName = "fastpath_tc_policy"
)

// loadPolicy loads both instances of tc_policy with maps under opts' pin
// path; sizes are tc_lb's (tc_policy reads fp_ct, sized with --ct-max);
// l7: the node runs the L7 proxy (fp_l7_dest).
func loadPolicy(opts *ebpf.CollectionOptions, sizes Sizes, mig *migration, l7 bool) (*Policy, error) {
	p := &Policy{}
	load := func(dir uint8, objs *bpfobj.TcpolicyObjects) error {
		cs, err := bpfobj.LoadTcpolicy()
		if err != nil {
			return err
		}
		if err := cs.Variables[bpfobj.TcpolicyVarFpPolicyDir].Set(uint32(dir)); err != nil {
			return fmt.Errorf("set policy direction: %w", err)
		}
		if l7 {
			if err := cs.Variables[bpfobj.TcpolicyVarFpL7Dest].Set(uint32(1)); err != nil {
				return fmt.Errorf("set l7: %w", err)
			}
		}
		return loadInto(func() (*ebpf.CollectionSpec, error) { return cs, nil }, objs, sizes, opts, mig)
	}
	if err := load(policymap.DirEgress, &p.egress); err != nil {
		return nil, fmt.Errorf("load tc_policy (egress): %w", err)
	}
	if err := load(policymap.DirIngress, &p.ingress); err != nil {
		p.egress.Close()
		return nil, fmt.Errorf("load tc_policy (ingress): %w", err)
	}
	return p, nil
}

// Close releases the handles; pins stay.
func (p *Policy) Close() error {
	if p == nil {
		return nil
	}
	return errors.Join(p.egress.Close(), p.ingress.Close())
}

// Maps are the policy maps the agent writes, typed.
func (p *Policy) Maps() policymap.Maps {
	o := &p.egress
	return policymap.Maps{
		IPCache:   bpfmap.NewKernel[policymap.IPCacheKey, policymap.IPCacheValue](o.FpIpcache, "fp_ipcache"),
		Endpoints: bpfmap.NewKernel[uint32, policymap.Endpoint](o.FpEndpoints, "fp_endpoints"),
		Policy:    bpfmap.NewKernel[policymap.PolicyKey, policymap.PolicyValue](o.FpPolicy, "fp_policy"),
	}
}

// policyPins are the link pins of tc_policy on ifc: its TC ingress (the
// pod's egress) and its TC egress (the pod's ingress). Neither starts
// with "tc-ingress-", which AttachedTC lists as tc_lb's.
func policyPins(pinDir string, ifc Iface) (ingress, egress string) {
	base := strings.TrimPrefix(ifc.pinName(), "tc-ingress-")
	return filepath.Join(pinDir, "links", "policy-tcingress-"+base), filepath.Join(pinDir, "links", "policy-tcegress-"+base)
}

// AttachPolicy attaches tc_policy to a pod's host veth in mode (that of
// tc_lb on the same veth, which must be attached first): at TCX ingress it
// is appended after tc_lb; in clsact mode it is a filter of a later
// priority. An earlier attachment is replaced atomically. Without a loaded
// Policy it does nothing.
func (d *Datapath) AttachPolicy(ifc Iface, mode TCMode) error {
	return d.attachPolicy(ifc, mode, true)
}

// AttachPolicyIngress attaches tc_policy at the TC ingress of a node
// interface (an uplink, fp_vxlan) after tc_lb, in mode (tc_lb's there): no
// endpoint is behind it, so the program only sends flows whose local
// destination pod's ingress has HTTP rules to the L7 proxy (remote
// clients; docs/l7.md). The link pins are those of AttachPolicy's ingress.
func (d *Datapath) AttachPolicyIngress(ifc Iface, mode TCMode) error {
	return d.attachPolicy(ifc, mode, false)
}

func (d *Datapath) attachPolicy(ifc Iface, mode TCMode, egress bool) error {
	if d.policy == nil {
		return nil
	}
	in, eg := policyPins(d.cfg.PinDir, ifc)
	if mode == TCX {
		if err := attachTCXPinned(in, ifc, d.policy.egress.FpTcPolicy, ebpf.AttachTCXIngress); err != nil {
			return fmt.Errorf("attach tc_policy at tcx ingress of %s: %w", ifc, err)
		}
		if !egress {
			return nil
		}
		if err := attachTCXPinned(eg, ifc, d.policy.ingress.FpTcPolicy, ebpf.AttachTCXEgress); err != nil {
			return fmt.Errorf("attach tc_policy at tcx egress of %s: %w", ifc, err)
		}
		return nil
	}
	h, l, err := linkAt(ifc)
	if err != nil {
		return err
	}
	defer h.Close()
	filters := []*netlink.BpfFilter{policyFilter(l.Attrs().Index, netlink.HANDLE_MIN_INGRESS, d.policy.egress.FpTcPolicy)}
	if egress {
		filters = append(filters, policyFilter(l.Attrs().Index, netlink.HANDLE_MIN_EGRESS, d.policy.ingress.FpTcPolicy))
	}
	for _, f := range filters {
		if err := h.FilterReplace(f); err != nil {
			return fmt.Errorf("tc_policy clsact filter on %s: %w", ifc, err)
		}
	}
	return nil
}

func policyFilter(ifindex int, parent uint32, prog *ebpf.Program) *netlink.BpfFilter {
	f := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifindex, Parent: parent, Handle: clsactHandle, Priority: policyPriority, Protocol: unix.ETH_P_ALL,
		},
		Name:         policyFilterName,
		DirectAction: true,
	}
	if prog != nil {
		f.Fd = prog.FD()
	}
	return f
}

// detachPolicy removes tc_policy from ifc, both ways it may be attached.
func detachPolicy(pinDir string, ifc Iface, h *netlink.Handle, l netlink.Link) []error {
	var errs []error
	in, eg := policyPins(pinDir, ifc)
	for _, pin := range []string{in, eg} {
		if ln, err := link.LoadPinnedLink(pin, nil); err == nil {
			errs = append(errs, ln.Unpin(), ln.Close())
		} else if _, serr := os.Stat(pin); serr == nil {
			errs = append(errs, os.Remove(pin))
		}
	}
	if h == nil || l == nil {
		return errs
	}
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		if err := h.FilterDel(policyFilter(l.Attrs().Index, parent, nil)); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("delete tc_policy filter on %s: %w", ifc, err))
		}
	}
	return errs
}

// Policy is the loaded policy program; nil when Config.Policy is off.
func (d *Datapath) Policy() *Policy { return d.policy }
