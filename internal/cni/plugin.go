// Package cni is the plugin side of fastpath-cni: it turns each CNI
// invocation into one call of the agent's API (internal/cniapi) and the
// agent's answer into what the runtime expects on stdout.
//
// All work (addresses, veths, BPF attachment, endpoint records) happens in
// the agent; the plugin stays small because the runtime starts it once per
// pod and verb. It must not import net/http or the Kubernetes client.
package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/ns"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/fastpath-net/fastpath/internal/cniapi"
)

// Versions are the CNI spec versions fastpath-cni speaks. GC and STATUS
// exist from 1.1.0 on; older configurations get ADD, DEL (and CHECK from
// 0.4.0).
var Versions = version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

// Conf is fastpath-cni's entry in a conflist. The agent writes it (see
// internal/cniserver's Conflist); every field has a default.
type Conf struct {
	types.PluginConf
	// Socket is the agent's API socket (default cniapi.DefaultSocket).
	Socket string `json:"socket,omitempty"`
	// MTU of the pod's interface; 0: the agent's default.
	MTU int `json:"mtu,omitempty"`
	// TimeoutSeconds bounds one call to the agent (default 60).
	TimeoutSeconds int `json:"timeoutSeconds,omitempty"`
}

// Funcs are the plugin's verbs for skel.PluginMainFuncs.
func Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: Add, Del: Del, Check: Check, GC: GC, Status: Status}
}

// About is printed when the binary is run without CNI_COMMAND.
const About = "fastpath-cni: CNI plugin of fastpath; a client of the fastpath agent on this node"

// parseConf decodes and validates stdin. Errors name the field.
func parseConf(data []byte) (*Conf, error) {
	conf := &Conf{}
	if err := json.Unmarshal(data, conf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "cannot decode the network configuration on stdin", err.Error())
	}
	if conf.IPAM.Type != "" {
		return nil, types.NewError(types.ErrUnsupportedField, fmt.Sprintf("ipam (type %q) is not supported", conf.IPAM.Type),
			"fastpath-cni allocates pod addresses in the agent from the node's pod CIDR; remove the ipam section")
	}
	if conf.MTU != 0 && (conf.MTU < 576 || conf.MTU > 65535) {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("mtu %d is out of range", conf.MTU), "want 576-65535, or 0 for the agent's default")
	}
	if conf.TimeoutSeconds < 0 {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("timeoutSeconds %d is negative", conf.TimeoutSeconds), "")
	}
	if conf.Socket == "" {
		conf.Socket = cniapi.DefaultSocket
	}
	if conf.TimeoutSeconds == 0 {
		conf.TimeoutSeconds = 60
	}
	return conf, nil
}

func request(args *skel.CmdArgs, conf *Conf) *cniapi.Request {
	return &cniapi.Request{
		ContainerID: args.ContainerID,
		NetNS:       args.Netns,
		IfName:      args.IfName,
		Args:        args.Args,
		Network:     conf.Name,
		MTU:         conf.MTU,
	}
}

// call sends one request; unreachable is the CNI code to report when the
// agent cannot be reached at all.
func call(conf *Conf, path string, req *cniapi.Request, unreachable uint) (*cniapi.Response, error) {
	resp, err := cniapi.Call(conf.Socket, path, req, time.Duration(conf.TimeoutSeconds)*time.Second)
	var apiErr *cniapi.Error
	switch {
	case err == nil:
		return resp, nil
	case errors.As(err, &apiErr):
		return nil, types.NewError(apiErr.Code, apiErr.Msg, apiErr.Details)
	case errors.Is(err, cniapi.ErrUnreachable):
		return nil, types.NewError(unreachable, "the fastpath agent is not running on this node (no answer on "+conf.Socket+")", err.Error())
	default:
		return nil, types.NewError(types.ErrTryAgainLater, "talking to the fastpath agent failed", err.Error())
	}
}

// Add asks the agent to attach the pod and prints its result.
func Add(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	// skel makes this check only after Add returns, when the agent would
	// already have moved a veth end into the node's own namespace.
	if o := strings.ToLower(args.NetnsOverride); o != "1" && o != "true" {
		if same, e := ns.CheckNetNS(args.Netns); e == nil && same {
			return types.NewError(types.ErrInvalidNetNS, "CNI_NETNS "+args.Netns+" is the namespace the plugin runs in (the node's), not a pod's", "")
		}
	}
	resp, err := call(conf, cniapi.PathAdd, request(args, conf), types.ErrTryAgainLater)
	if err != nil {
		return err
	}
	result, err := current.NewResult(resp.Result)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "the agent's result is not a CNI result", err.Error())
	}
	return types.PrintResult(result, conf.CNIVersion)
}

// Del asks the agent to detach the pod. The agent succeeds for attachments
// it does not know, as the spec requires.
func Del(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	_, err = call(conf, cniapi.PathDel, request(args, conf), types.ErrTryAgainLater)
	return err
}

// Check asks the agent to verify the pod's network against prevResult.
func Check(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	req := request(args, conf)
	if conf.RawPrevResult != nil {
		if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
			return types.NewError(types.ErrDecodingFailure, "cannot decode prevResult", err.Error())
		}
		prev, err := current.NewResultFromResult(conf.PrevResult)
		if err != nil {
			return types.NewError(types.ErrDecodingFailure, "cannot convert prevResult to CNI "+cniapi.CurrentVersion, err.Error())
		}
		if req.PrevResult, err = json.Marshal(prev); err != nil {
			return err
		}
	}
	_, err = call(conf, cniapi.PathCheck, req, types.ErrTryAgainLater)
	return err
}

// GC asks the agent to release every attachment of this network that is
// not in the runtime's valid list.
func GC(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	req := &cniapi.Request{Network: conf.Name, Valid: make([]cniapi.Attachment, 0, len(conf.ValidAttachments))}
	for _, a := range conf.ValidAttachments {
		req.Valid = append(req.Valid, cniapi.Attachment{ContainerID: a.ContainerID, IfName: a.IfName})
	}
	_, err = call(conf, cniapi.PathGC, req, types.ErrTryAgainLater)
	return err
}

// Status reports whether an ADD could succeed now: the agent must run and
// have addresses to give.
func Status(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	_, err = call(conf, cniapi.PathStatus, &cniapi.Request{Network: conf.Name}, types.ErrPluginNotAvailable)
	return err
}
