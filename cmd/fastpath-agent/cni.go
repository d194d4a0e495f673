package main

import (
	"flag"
	"fmt"
	"strings"

	"github.com/fastpath-net/fastpath/internal/agent"
	"github.com/fastpath-net/fastpath/internal/datapath"
)

// cniFlags are the flags of agent.CNI.
type cniFlags struct {
	socket, stateDir, confDir, podCIDR, chained, tc *string
	mtu                                             *int
}

func addCNIFlags(fs *flag.FlagSet) cniFlags {
	return cniFlags{
		socket: fs.String("cni-socket", "", "unix socket of the API fastpath-cni calls (the conflist names it; /run/fastpath/cni.sock is the plugin's default); empty: no CNI"),
		stateDir: fs.String("cni-state-dir", "/var/lib/fastpath/cni", "directory of the pod address leases and endpoint records; keep it across agent restarts "+
			"(fastpathctl endpoint list reads it)"),
		confDir: fs.String("cni-conf-dir", "/etc/cni/net.d", "directory where the agent installs 10-fastpath.conflist once the CNI API answers; empty: do not install"),
		podCIDR: fs.String("pod-cidr", "", "comma-separated pod CIDRs of this node, at most one per family (standalone); "+
			"default: the Node's spec.podCIDRs"),
		chained: fs.String("cni-chained-plugins", "", "comma-separated plugins the conflist runs after fastpath-cni (portmap, bandwidth, ...)"),
		tc: fs.String("cni-tc-mode", "auto", "how tc_lb attaches to pod veths: auto (clsact, or tcx when bandwidth is chained), tcx or clsact. "+
			"A TCX attach holds the RTNL lock for an RCU grace period, which serialises concurrent pod setups; "+
			"clsact takes the ingress qdisc that bandwidth's egress shaping needs"),
		mtu: fs.Int("cni-mtu", 0, "MTU of pod interfaces; 0: 1500 (subtract the encapsulation overhead when pods talk through a tunnel)"),
	}
}

// cni returns the CNI configuration, or nil when --cni-socket is not given;
// kube says whether Kubernetes is the source (the pod CIDR's other origin).
func (f cniFlags) cni(kube bool) (*agent.CNI, error) {
	if *f.socket == "" {
		if *f.podCIDR != "" || *f.chained != "" || *f.mtu != 0 {
			return nil, fmt.Errorf("--pod-cidr, --cni-chained-plugins and --cni-mtu need --cni-socket")
		}
		return nil, nil
	}
	cidrs, err := parseCIDRs(*f.podCIDR)
	if err != nil {
		return nil, fmt.Errorf("--pod-cidr: %w", err)
	}
	if len(cidrs) == 0 && !kube {
		return nil, fmt.Errorf("--cni-socket needs the node's pod CIDR: give --pod-cidr, or use Kubernetes (Node.spec.podCIDRs)")
	}
	if *f.mtu != 0 && (*f.mtu < 576 || *f.mtu > 65535) {
		return nil, fmt.Errorf("--cni-mtu=%d: want 576-65535, or 0 for 1500", *f.mtu)
	}
	if *f.stateDir == "" {
		return nil, fmt.Errorf("--cni-state-dir: must not be empty with --cni-socket")
	}
	tc, err := datapath.ParseTCMode(*f.tc)
	if err != nil {
		return nil, fmt.Errorf("--cni-tc-mode: %w", err)
	}
	c := &agent.CNI{Socket: *f.socket, StateDir: *f.stateDir, ConfDir: *f.confDir, PodCIDRs: cidrs, MTU: *f.mtu, TC: tc}
	if *f.chained != "" {
		c.Chained = strings.Split(*f.chained, ",")
	}
	return c, nil
}
