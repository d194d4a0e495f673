package agent

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fastpath-net/fastpath/internal/cniserver"
	"github.com/fastpath-net/fastpath/internal/datapath"
	"github.com/fastpath-net/fastpath/internal/endpoint"
	"github.com/fastpath-net/fastpath/internal/ipam"
	"github.com/fastpath-net/fastpath/internal/podnet"
)

// CNI configures the agent's side of fastpath-cni; nil: no CNI.
type CNI struct {
	Socket   string         // where the CNI API is served
	StateDir string         // leases (StateDir/ipam) and endpoints (StateDir/endpoints)
	ConfDir  string         // where the conflist is installed; "": not installed
	PodCIDRs []netip.Prefix // the node's pod CIDRs; empty: Node.spec.podCIDRs
	MTU      int            // pod MTU; 0: 1500
	Chained  []string       // plugins the conflist runs after fastpath-cni
	// TC is how tc_lb attaches to pod veths; auto: clsact, or TCX when
	// bandwidth is chained (see cniserver.Config.TC for why).
	TC datapath.TCMode
}

// podTCMode resolves CNI.TC.
func (c *CNI) podTCMode() datapath.TCMode {
	if c.TC != datapath.TCAuto {
		return c.TC
	}
	if slices.Contains(c.Chained, "bandwidth") {
		return datapath.TCX
	}
	return datapath.TCClsact
}

// startCNI opens the state, serves the API and installs the conflist once
// the API answers. Errors in opening state stop the agent; the rest runs
// until ctx ends.
func (a *Agent) startCNI(ctx context.Context) error {
	c := a.cfg.CNI
	alloc, err := ipam.Open(filepath.Join(c.StateDir, "ipam"))
	if err != nil {
		return err
	}
	eps, err := endpoint.Open(endpoint.Dir(c.StateDir))
	if err != nil {
		// Unreadable records are logged, not fatal: their leases still
		// hold the addresses, and GC removes what the runtime disowns.
		a.log.Error("some endpoint records are unreadable", "error", err)
	}
	if len(c.PodCIDRs) > 0 {
		if err := alloc.SetRanges(c.PodCIDRs); err != nil {
			return fmt.Errorf("--pod-cidr: %w", err)
		}
	} else if a.cfg.Kubernetes != nil {
		go a.podCIDRsFromNode(ctx, alloc)
	} else {
		return fmt.Errorf("CNI needs the node's pod CIDR: give --pod-cidr, or --kubeconfig to read Node.spec.podCIDRs")
	}
	// With recreated maps, this agent's programs go on the pods' veths
	// once the maps are programmed (attachWhenProgrammed).
	if !a.attachPending {
		a.reattachPods(eps)
	}
	a.epsMu.Lock()
	a.eps = eps
	a.epsMu.Unlock()
	hcfg := cniserver.Config{
		NodeNS: a.cfg.NetNS, MTU: c.MTU, IPAM: alloc, Endpoints: eps, Datapath: a.dp, TC: c.podTCMode(),
		Log: a.log.With("component", "cni"),
	}
	if a.policy != nil {
		a.policy.setEndpoints(eps)
		hcfg.Added = a.policy.endpointAdded
	}
	h := cniserver.New(hcfg)
	ln, err := cniserver.Listen(c.Socket)
	if err != nil {
		return err
	}
	go func() {
		if err := cniserver.Serve(ctx, ln, h, a.log.With("component", "cni")); err != nil {
			a.log.Error("cni API stopped", "error", err)
		}
	}()
	if c.ConfDir != "" {
		path, err := cniserver.Conflist{Socket: c.Socket, MTU: c.MTU, Chained: c.Chained}.Install(c.ConfDir)
		if err != nil {
			return fmt.Errorf("install CNI configuration: %w", err)
		}
		a.log.Info("installed CNI configuration", "path", path)
	}
	return nil
}

// reattachPods puts this agent's tc_lb (and tc_policy, after it) on the
// host veth of every endpoint a previous agent attached: the pinned links
// still run the old programs, which an upgrade must replace. Each keeps its
// attach mode (a second mode would run the program twice). Pods whose veth
// is gone are left to DEL and GC. accept_local follows this agent's L7
// proxy setting, whatever the previous agent's was.
func (a *Agent) reattachPods(eps *endpoint.Store) {
	for _, ep := range eps.List() {
		ifc := datapath.Iface{NetNS: a.cfg.NetNS, Name: ep.Interface}
		if _, err := a.dp.AttachTCMode(ifc, datapath.RoleInternal, datapath.TCMode(ep.TC)); err != nil {
			a.log.Warn("cni: cannot re-attach the load balancer to a pod", "endpoint", ep.ID, "interface", ep.Interface, "error", err)
			continue
		}
		if err := a.dp.AttachPolicy(ifc, datapath.TCMode(ep.TC)); err != nil {
			a.log.Warn("cni: cannot re-attach network policy to a pod", "endpoint", ep.ID, "interface", ep.Interface, "error", err)
		}
		// accept_local exactly while the L7 proxy runs: left on by an
		// agent that ran it, a pod could send from the node's address,
		// unchecked here without policy (datapath.Config.Policy).
		if err := podnet.SetAcceptLocal(a.cfg.NetNS, ep.Interface, a.cfg.L7Proxy != nil); err != nil {
			msg := "cni: cannot turn accept_local off on a pod's veth"
			if a.cfg.L7Proxy != nil {
				msg = "l7 proxy: flows from the node to this pod cannot reach the proxy"
			}
			a.log.Warn(msg, "endpoint", ep.ID, "interface", ep.Interface, "error", err)
		}
	}
}

// podCIDRsFromNode waits until the Node has spec.podCIDRs (the
// controller-manager assigns them) and hands them to the allocator. Until
// then STATUS reports not ready and ADD asks the runtime to try again.
func (a *Agent) podCIDRsFromNode(ctx context.Context, alloc *ipam.Allocator) {
	client := a.client
	name := a.cfg.Kubernetes.NodeName
	for wait := 200 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		node, err := client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			var cidrs []netip.Prefix
			for _, s := range node.Spec.PodCIDRs {
				p, perr := netip.ParsePrefix(s)
				if perr != nil {
					a.log.Error("cni: Node has an invalid spec.podCIDRs entry", "node", name, "cidr", s)
					continue
				}
				cidrs = append(cidrs, p)
			}
			if len(cidrs) > 0 {
				if err := alloc.SetRanges(cidrs); err != nil {
					a.log.Error("cni: cannot use the Node's pod CIDRs", "node", name, "error", err)
				} else {
					a.log.Info("cni: pod CIDRs from the Node", "node", name, "cidrs", fmt.Sprint(cidrs))
					return
				}
			}
		} else {
			a.log.Debug("cni: reading the Node for its pod CIDR", "node", name, "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}
