package cniserver

import (
	"errors"

	"github.com/fastpath-net/fastpath/internal/cniapi"
	"github.com/fastpath-net/fastpath/internal/endpoint"
	"github.com/fastpath-net/fastpath/internal/ipam"
	"github.com/fastpath-net/fastpath/internal/podnet"
)

// GC removes every attachment of the request's network that the runtime no
// longer lists as valid: records, veths and leases, including those of
// ADDs that never finished. Host veths of fastpath that no record and no
// valid attachment explains go too.
func (h *Handler) GC(req *cniapi.Request) (*cniapi.Response, *cniapi.Error) {
	if req.Network == "" {
		return nil, cniapi.Errorf(cniapi.CodeInvalidNetworkConfig, "network configuration has no name", "")
	}
	h.gc.Lock()
	defer h.gc.Unlock()
	valid := map[endpoint.Key]bool{}
	for _, a := range req.Valid {
		valid[endpoint.Key{Network: req.Network, ContainerID: a.ContainerID, IfName: a.IfName}] = true
	}
	var errs []error
	explained := map[string]bool{}
	removed := 0
	for _, ep := range h.cfg.Endpoints.List() {
		if ep.Network != req.Network || valid[ep.Key] {
			explained[ep.Interface] = true
			continue
		}
		if err := h.remove(ep.Key); err != nil {
			errs = append(errs, err)
			explained[ep.Interface] = true
		}
		removed++
	}
	freed, err := h.cfg.IPAM.GC(req.Network, func(o ipam.Owner) bool {
		return valid[endpoint.Key{Network: o.Network, ContainerID: o.ContainerID, IfName: o.IfName}]
	})
	errs = append(errs, err)
	for k := range valid {
		explained[hostIface(k)] = true
	}
	hosts, err := podnet.HostIfaces(h.cfg.NodeNS)
	errs = append(errs, err)
	var orphans []string
	for _, host := range hosts {
		if explained[host] {
			continue
		}
		if err := h.teardown(host); err != nil {
			errs = append(errs, err)
			continue
		}
		orphans = append(orphans, host)
	}
	h.cfg.Log.Info("cni gc", "network", req.Network, "valid", len(req.Valid), "endpoints_removed", removed,
		"leases_released", len(freed), "orphan_veths_removed", len(orphans))
	if err := errors.Join(errs...); err != nil {
		return nil, cniapi.Errorf(cniapi.CodeInternal, "garbage collection was incomplete", err.Error())
	}
	return &cniapi.Response{}, nil
}
