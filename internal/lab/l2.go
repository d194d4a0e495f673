package lab

import (
	"context"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/fastpath-net/fastpath/internal/l2announce"
	"github.com/fastpath-net/fastpath/internal/nettopo"
)

// checkL2: the external client reaches L2LBIP, which it can only find by
// ARP (no route, no neighbour entry planted), through the node holding
// the IP's Lease: the MAC the client learnt must be that node's.
func checkL2(ctx context.Context, cs kubernetes.Interface, ext *nettopo.NS, nodes int) check {
	name := fmt.Sprintf("external -> L2-announced LB IP %s:80 (ARP only), 40 requests", L2LBIP)
	holder, err := waitL2Holder(ctx, cs, "", agentTimeout)
	if err != nil {
		return check{name: name, err: err}
	}
	c := checkHTTP(ext, name, fmt.Sprintf("http://%s/", L2LBIP), 40)
	if c.err != nil {
		return c
	}
	via, err := l2NextHop(ext, nodes)
	switch {
	case err != nil:
		c.err = err
	case via != holder:
		c.err = fmt.Errorf("the client sends to %s, the Lease is held by %s", via, holder)
	default:
		c.detail += ", via " + holder
	}
	return c
}

// l2Holder is the node holding L2LBIP's Lease; "" when none does.
func l2Holder(ctx context.Context, cs kubernetes.Interface) string {
	l, err := cs.CoordinationV1().Leases("kube-system").Get(ctx, l2announce.LeaseName(L2LBIP), metav1.GetOptions{})
	if err != nil {
		return ""
	}
	return ptr.Deref(l.Spec.HolderIdentity, "")
}

// waitL2Holder waits until a node other than not holds L2LBIP's Lease.
func waitL2Holder(ctx context.Context, cs kubernetes.Interface, not string, within time.Duration) (string, error) {
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if h := l2Holder(ctx, cs); h != "" && h != not {
			return h, nil
		}
	}
	return "", fmt.Errorf("no node (other than %q) holds the Lease of %s within %s", not, L2LBIP, within)
}

// l2NextHop is the node whose MAC the client's neighbour entry for
// L2LBIP holds.
func l2NextHop(ext *nettopo.NS, nodes int) (string, error) {
	neighs, err := ext.Netlink().NeighList(0, netlink.FAMILY_V4)
	if err != nil {
		return "", err
	}
	for _, n := range neighs {
		if !n.IP.Equal(L2LBIP.AsSlice()) {
			continue
		}
		for i := 1; i <= nodes; i++ {
			if mac, err := uplinkMAC(i); err == nil && slices.Equal(mac, n.HardwareAddr) {
				return nodeName(i), nil
			}
		}
		return "", fmt.Errorf("the client's neighbour entry for %s is %s, no node's", L2LBIP, n.HardwareAddr)
	}
	return "", fmt.Errorf("the client has no neighbour entry for %s", L2LBIP)
}

func uplinkMAC(i int) (net.HardwareAddr, error) {
	ns, err := nettopo.OpenNS(nodeNSName(i))
	if err != nil {
		return nil, err
	}
	defer ns.Release()
	return ns.HardwareAddr(uplink)
}
