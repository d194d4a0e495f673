package cniserver

import (
	"fmt"
	"slices"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/fastpath-net/fastpath/internal/cniapi"
	"github.com/fastpath-net/fastpath/internal/podnet"
)

// Check verifies that the pod's network is as ADD left it: the record, the
// address lease, both veth ends with their addresses, tc_lb on the host
// veth in the recorded mode, and prevResult's addresses (if given) equal to
// the record's.
func (h *Handler) Check(req *cniapi.Request) (*cniapi.Response, *cniapi.Error) {
	if e := validate(req, true); e != nil {
		return nil, e
	}
	h.gc.RLock()
	defer h.gc.RUnlock()
	k := keyOf(req)
	defer h.lockKey(k)()
	ep, ok := h.cfg.Endpoints.Get(k)
	if !ok {
		return nil, cniapi.Errorf(cniapi.CodeUnknownContainer, "no attachment "+k.String(), "ADD it first")
	}
	fail := func(format string, args ...any) (*cniapi.Response, *cniapi.Error) {
		return nil, cniapi.Errorf(cniapi.CodeCheckFailed, fmt.Sprintf("endpoint %d: ", ep.ID)+fmt.Sprintf(format, args...), "")
	}
	if ep.NetNS != req.NetNS {
		return fail("attached in netns %s, CHECK names %s", ep.NetNS, req.NetNS)
	}
	leased := map[string]bool{}
	for _, l := range h.cfg.IPAM.Leases() {
		if l.Owner == ownerOf(k) {
			leased[l.Addr.String()] = true
		}
	}
	for _, ip := range ep.IPs {
		if !leased[ip.String()] {
			return fail("address %s is not leased to it", ip)
		}
	}
	if err := podnet.Check(podnet.Attachment{NodeNS: h.cfg.NodeNS, PodNS: ep.NetNS, HostIface: ep.Interface, IfName: ep.IfName, IPs: ep.IPs, MTU: ep.MTU}); err != nil {
		return fail("%v", err)
	}
	if h.cfg.Datapath != nil {
		mode, err := h.cfg.Datapath.TCAttachment(h.iface(ep.Interface))
		if err != nil {
			return fail("load balancer on %s: %v", ep.Interface, err)
		}
		if string(mode) != ep.TC {
			return fail("load balancer on %s attached as %q, want %q", ep.Interface, mode, ep.TC)
		}
	}
	if len(req.PrevResult) > 0 {
		prev, err := current.NewResult(req.PrevResult)
		if err != nil {
			return nil, cniapi.Errorf(cniapi.CodeDecodingFailure, "cannot decode prevResult", err.Error())
		}
		r, err := current.GetResult(prev)
		if err != nil {
			return nil, cniapi.Errorf(cniapi.CodeDecodingFailure, "cannot decode prevResult", err.Error())
		}
		var got []string
		for _, ipc := range r.IPs {
			got = append(got, ipc.Address.IP.String())
		}
		var want []string
		for _, ip := range ep.IPs {
			want = append(want, ip.String())
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			return fail("prevResult has addresses %v, the endpoint %v", got, want)
		}
	}
	return &cniapi.Response{}, nil
}
