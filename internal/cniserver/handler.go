package cniserver

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/fastpath-net/fastpath/internal/cniapi"
	"github.com/fastpath-net/fastpath/internal/datapath"
	"github.com/fastpath-net/fastpath/internal/endpoint"
	"github.com/fastpath-net/fastpath/internal/ipam"
	"github.com/fastpath-net/fastpath/internal/podnet"
)

// Datapath attaches the per-pod programs; *datapath.Datapath is one.
type Datapath interface {
	AttachTCMode(datapath.Iface, datapath.IfaceRole, datapath.TCMode) (datapath.TCMode, error)
	DetachTC(datapath.Iface) error
	TCAttachment(datapath.Iface) (datapath.TCMode, error)
}

// Config is what the handler works with.
type Config struct {
	NodeNS    string // the node's network namespace path; "" = the agent's own
	MTU       int    // pod MTU when the plugin configuration gives none
	IPAM      *ipam.Allocator
	Endpoints *endpoint.Store
	Datapath  Datapath
	// TC is how tc_lb is attached to pod veths. A TCX attach waits for an
	// RCU grace period while holding the RTNL lock, so concurrent ADDs
	// queue behind each other (1.3 s for 100 ADDs 10 at a time, against
	// 0.33 s with clsact); but clsact takes the ingress qdisc slot that the
	// bandwidth plugin needs for egress shaping. The agent picks clsact
	// unless bandwidth is chained (agent.CNI.TC).
	TC datapath.TCMode
	// Added, when set, runs after an endpoint is plumbed and recorded (the
	// agent attaches tc_policy and writes the pod's policy). An error fails
	// the ADD and undoes it: a pod is never left without its policy hook.
	Added func(endpoint.Endpoint) error
	Log   *slog.Logger
}

// DefaultMTU is the pod MTU without an overlay.
const DefaultMTU = 1500

// Handler does the work of each CNI verb.
type Handler struct {
	cfg Config
	// gc is held shared by ADD/DEL/CHECK and exclusively by GC, so GC never
	// sees an attachment half made.
	gc sync.RWMutex
	// keyLocks serialise the verbs of one attachment (a runtime may time out
	// an ADD and send DEL while the ADD still runs); attachments share a
	// lock only by hash collision.
	keyLocks [64]sync.Mutex
}

// New returns a handler.
func New(cfg Config) *Handler {
	if cfg.MTU == 0 {
		cfg.MTU = DefaultMTU
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Handler{cfg: cfg}
}

func keyOf(req *cniapi.Request) endpoint.Key {
	return endpoint.Key{Network: req.Network, ContainerID: req.ContainerID, IfName: req.IfName}
}

func ownerOf(k endpoint.Key) ipam.Owner {
	return ipam.Owner{Network: k.Network, ContainerID: k.ContainerID, IfName: k.IfName}
}

func (h *Handler) lockKey(k endpoint.Key) func() {
	var sum uint32
	for _, b := range []byte(k.String()) {
		sum = sum*31 + uint32(b)
	}
	m := &h.keyLocks[sum%uint32(len(h.keyLocks))]
	m.Lock()
	return m.Unlock
}

// hostIface is the host veth of k.
func hostIface(k endpoint.Key) string { return podnet.HostIface(k.String()) }

func (h *Handler) iface(name string) datapath.Iface {
	return datapath.Iface{NetNS: h.cfg.NodeNS, Name: name}
}

// validate checks the fields every per-attachment verb needs.
func validate(req *cniapi.Request, needNetNS bool) *cniapi.Error {
	var missing []string
	if req.ContainerID == "" {
		missing = append(missing, "CNI_CONTAINERID")
	}
	if req.IfName == "" {
		missing = append(missing, "CNI_IFNAME")
	}
	if needNetNS && req.NetNS == "" {
		missing = append(missing, "CNI_NETNS")
	}
	if len(missing) > 0 {
		return cniapi.Errorf(cniapi.CodeInvalidEnvironment, "required variables "+strings.Join(missing, ", ")+" missing", "")
	}
	if req.Network == "" {
		return cniapi.Errorf(cniapi.CodeInvalidNetworkConfig, "network configuration has no name", "")
	}
	if req.MTU != 0 && (req.MTU < 576 || req.MTU > 65535) {
		return cniapi.Errorf(cniapi.CodeInvalidNetworkConfig, fmt.Sprintf("mtu %d is out of range (576-65535)", req.MTU), "")
	}
	return nil
}

// Add attaches a pod: address, veth, tc_lb on the host veth, record.
func (h *Handler) Add(req *cniapi.Request) (*cniapi.Response, *cniapi.Error) {
	if e := validate(req, true); e != nil {
		return nil, e
	}
	pod, e := parseArgs(req.Args)
	if e != nil {
		return nil, e
	}
	h.gc.RLock()
	defer h.gc.RUnlock()
	k := keyOf(req)
	defer h.lockKey(k)()
	if ep, ok := h.cfg.Endpoints.Get(k); ok {
		return nil, cniapi.Errorf(cniapi.CodeAlreadyAttached,
			fmt.Sprintf("container %s already has interface %s on network %s", k.ContainerID, k.IfName, k.Network),
			fmt.Sprintf("endpoint %d, address %v; a second ADD needs a DEL first", ep.ID, ep.IPs))
	}
	if _, err := os.Stat(req.NetNS); err != nil {
		return nil, cniapi.Errorf(cniapi.CodeUnknownContainer, "network namespace "+req.NetNS+" does not exist", err.Error())
	}
	ips, err := h.cfg.IPAM.Allocate(ownerOf(k))
	switch {
	case errors.Is(err, ipam.ErrExhausted):
		return nil, cniapi.Errorf(cniapi.CodeAddressesExhausted, "no free pod address on this node", err.Error())
	case errors.Is(err, ipam.ErrNoRange):
		return nil, cniapi.Errorf(cniapi.CodeTryAgainLater, "this node has no pod CIDR yet", "the agent takes it from Node.spec.podCIDRs, or --pod-cidr")
	case err != nil:
		return nil, cniapi.Errorf(cniapi.CodeIOFailure, "allocating a pod address failed", err.Error())
	}
	ep, apiErr := h.plumb(req, k, ips, pod)
	if apiErr != nil {
		if _, err := h.cfg.IPAM.Release(ownerOf(k)); err != nil {
			h.cfg.Log.Error("releasing the address of a failed ADD", "attachment", k.String(), "error", err)
		}
		return nil, apiErr
	}
	h.cfg.Log.Info("pod attached", "endpoint", ep.ID, "pod", ep.Pod.Namespace+"/"+ep.Pod.Name, "ips", fmt.Sprint(ep.IPs), "interface", ep.Interface)
	return result(ep)
}

// plumb makes the veth, attaches tc_lb and writes the record; on error it
// leaves none of them.
func (h *Handler) plumb(req *cniapi.Request, k endpoint.Key, ips []netip.Addr, pod endpoint.Pod) (endpoint.Endpoint, *cniapi.Error) {
	mtu := req.MTU
	if mtu == 0 {
		mtu = h.cfg.MTU
	}
	host := hostIface(k)
	res, err := podnet.Setup(podnet.Attachment{NodeNS: h.cfg.NodeNS, PodNS: req.NetNS, HostIface: host, IfName: req.IfName, IPs: ips, MTU: mtu})
	switch {
	case errors.Is(err, podnet.ErrNoNetNS):
		return endpoint.Endpoint{}, cniapi.Errorf(cniapi.CodeUnknownContainer, "network namespace "+req.NetNS+" does not exist", err.Error())
	case errors.Is(err, podnet.ErrIfaceExists):
		return endpoint.Endpoint{}, cniapi.Errorf(cniapi.CodeAlreadyAttached, "the pod already has an interface "+req.IfName, err.Error())
	case err != nil:
		return endpoint.Endpoint{}, cniapi.Errorf(cniapi.CodeInternal, "setting up the pod's veth failed", err.Error())
	}
	ep := endpoint.Endpoint{
		Key: k, NetNS: req.NetNS, Interface: host, MAC: res.PodMAC.String(), IPs: ips, MTU: mtu,
		Pod: pod, Created: time.Now().UTC(),
	}
	undo := func() {
		if err := h.teardown(host); err != nil {
			h.cfg.Log.Error("removing the veth of a failed ADD", "interface", host, "error", err)
		}
	}
	if h.cfg.Datapath != nil {
		mode, err := h.cfg.Datapath.AttachTCMode(h.iface(host), datapath.RoleInternal, h.cfg.TC)
		if err != nil {
			undo()
			return ep, cniapi.Errorf(cniapi.CodeInternal, "attaching the load balancer to "+host+" failed", err.Error())
		}
		ep.TC = string(mode)
	}
	if ep.ID, err = h.cfg.Endpoints.Put(ep); err != nil {
		undo()
		return ep, cniapi.Errorf(cniapi.CodeIOFailure, "writing the endpoint record failed", err.Error())
	}
	if h.cfg.Added != nil {
		if err := h.cfg.Added(ep); err != nil {
			undo()
			if derr := h.cfg.Endpoints.Delete(k); derr != nil {
				h.cfg.Log.Error("removing the endpoint record of a failed ADD", "endpoint", ep.ID, "error", derr)
			}
			return ep, cniapi.Errorf(cniapi.CodeInternal, "attaching network policy to "+host+" failed", err.Error())
		}
	}
	return ep, nil
}

// teardown detaches tc_lb and deletes the veth named host.
func (h *Handler) teardown(host string) error {
	var errs []error
	if h.cfg.Datapath != nil {
		errs = append(errs, h.cfg.Datapath.DetachTC(h.iface(host)))
	}
	errs = append(errs, podnet.Teardown(h.cfg.NodeNS, host))
	return errors.Join(errs...)
}

func result(ep endpoint.Endpoint) (*cniapi.Response, *cniapi.Error) {
	r := &current.Result{
		CNIVersion: cniapi.CurrentVersion,
		Interfaces: []*current.Interface{
			{Name: ep.Interface, Mtu: ep.MTU},
			{Name: ep.IfName, Mac: ep.MAC, Mtu: ep.MTU, Sandbox: ep.NetNS},
		},
	}
	for _, ip := range ep.IPs {
		gw := podnet.Gateway4
		if ip.Is6() {
			gw = podnet.Gateway6
		}
		bits := ip.BitLen()
		r.IPs = append(r.IPs, &current.IPConfig{
			Interface: current.Int(1),
			Address:   net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(bits, bits)},
			Gateway:   gw.AsSlice(),
		})
		r.Routes = append(r.Routes, &types.Route{Dst: net.IPNet{IP: make(net.IP, bits/8), Mask: net.CIDRMask(0, bits)}, GW: gw.AsSlice()})
	}
	data, err := r.MarshalJSON()
	if err != nil {
		return nil, cniapi.Errorf(cniapi.CodeInternal, "encoding the result failed", err.Error())
	}
	return &cniapi.Response{Result: data}, nil
}

// Del detaches a pod. It succeeds when there is nothing to remove (an
// unknown container, a second DEL, a netns already gone), as the spec asks.
func (h *Handler) Del(req *cniapi.Request) (*cniapi.Response, *cniapi.Error) {
	if e := validate(req, false); e != nil {
		return nil, e
	}
	h.gc.RLock()
	defer h.gc.RUnlock()
	k := keyOf(req)
	defer h.lockKey(k)()
	if err := h.remove(k); err != nil {
		return nil, cniapi.Errorf(cniapi.CodeInternal, "removing "+k.String()+" failed", err.Error())
	}
	return &cniapi.Response{}, nil
}

// remove undoes everything an ADD of k made, whether or not it finished.
func (h *Handler) remove(k endpoint.Key) error {
	host := hostIface(k)
	ep, known := h.cfg.Endpoints.Get(k)
	if known {
		host = ep.Interface
	}
	if err := h.teardown(host); err != nil {
		return err
	}
	freed, err := h.cfg.IPAM.Release(ownerOf(k))
	if err != nil {
		return err
	}
	if err := h.cfg.Endpoints.Delete(k); err != nil {
		return err
	}
	if known || len(freed) > 0 {
		h.cfg.Log.Info("pod detached", "endpoint", ep.ID, "attachment", k.String(), "released", fmt.Sprint(freed))
	}
	return nil
}

// Status reports whether ADD can succeed.
func (h *Handler) Status(*cniapi.Request) (*cniapi.Response, *cniapi.Error) {
	if len(h.cfg.IPAM.Ranges()) == 0 {
		return nil, cniapi.Errorf(cniapi.CodePluginNotAvailable, "this node has no pod CIDR yet",
			"the agent takes it from Node.spec.podCIDRs, or --pod-cidr")
	}
	return &cniapi.Response{}, nil
}

// parseArgs reads the pod's identity from CNI_ARGS; unknown keys are
// ignored, as runtimes pass their own.
func parseArgs(args string) (endpoint.Pod, *cniapi.Error) {
	var pod endpoint.Pod
	if args == "" {
		return pod, nil
	}
	for _, kv := range strings.Split(args, ";") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return pod, cniapi.Errorf(cniapi.CodeInvalidEnvironment, fmt.Sprintf("CNI_ARGS: %q is not KEY=VALUE", kv), "")
		}
		switch k {
		case "K8S_POD_NAMESPACE":
			pod.Namespace = v
		case "K8S_POD_NAME":
			pod.Name = v
		case "K8S_POD_UID":
			pod.UID = v
		}
	}
	return pod, nil
}
