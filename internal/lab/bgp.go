package lab

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"github.com/fastpath-net/fastpath/internal/bgp"
	"github.com/fastpath-net/fastpath/internal/birdc"
	"github.com/fastpath-net/fastpath/internal/nettopo"
	"github.com/fastpath-net/fastpath/internal/testenv"
)

// The BGP part of the lab: a router (BIRD, Debian's bird2) on the underlay
// peering with every node's fastpath-bgp, and an outside client behind it that
// reaches LoadBalancer IPs only through the routes BIRD learned and put in
// its kernel table.
var (
	routerIP     = netip.MustParseAddr("192.168.50.2")
	outside      = netip.MustParsePrefix("10.70.0.0/24")
	routerOutIP  = netip.MustParseAddr("10.70.0.1")
	outsideIP    = netip.MustParseAddr("10.70.0.2")
	routerASN    = 64500
	nodeASN      = 64512
	birdConfName = "bird.conf"
	birdSockName = "bird.ctl"
)

func routerNSName() string  { return Base + "-rtr" }
func outsideNSName() string { return Base + "-out" }

// buildRouter adds the router to the underlay (forwarding to the outside
// network) and the outside client; the nodes route the outside network
// through the router.
func buildRouter(nodes int, join func(name, port string, addr netip.Addr) (*nettopo.NS, error)) error {
	rtr, err := join(routerNSName(), "p-rtr", routerIP)
	if err != nil {
		return err
	}
	defer rtr.Release()
	if err := rtr.Sysctl("net/ipv4/ip_forward", "1"); err != nil {
		return err
	}
	out, err := nettopo.NewNS(outsideNSName())
	if err != nil {
		return err
	}
	defer out.Release()
	if err := nettopo.Veth(out, uplink, rtr, "eth1"); err != nil {
		return err
	}
	if err := out.AddAddr(uplink, netip.PrefixFrom(outsideIP, outside.Bits())); err != nil {
		return err
	}
	if err := rtr.AddAddr("eth1", netip.PrefixFrom(routerOutIP, outside.Bits())); err != nil {
		return err
	}
	if err := out.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), routerOutIP, uplink); err != nil {
		return err
	}
	for i := 1; i <= nodes; i++ {
		ns, err := nettopo.OpenNS(nodeNSName(i))
		if err != nil {
			return err
		}
		err = ns.AddRoute(outside, routerIP, uplink)
		ns.Release()
		if err != nil {
			return err
		}
	}
	return nil
}

// startRouter writes BIRD's configuration and starts it in the router's
// namespace, recorded in st like every lab process. Without bird installed
// the lab still comes up; its BGP row says what is missing.
func startRouter(st *State, nodes int) error {
	bin, err := exec.LookPath("bird")
	if err != nil {
		return nil
	}
	cfg := birdc.Config{RouterID: routerIP, ASN: routerASN}
	for i := 1; i <= nodes; i++ {
		cfg.Neighbors = append(cfg.Neighbors, birdc.Neighbor{Name: nodeName(i), Addr: nodeIP(i), ASN: nodeASN})
	}
	path := filepath.Join(StateDir, birdConfName)
	if err := os.WriteFile(path, []byte(cfg.String()), 0o644); err != nil {
		return err
	}
	rtr, err := nettopo.OpenNS(routerNSName())
	if err != nil {
		return err
	}
	defer rtr.Release()
	return spawn(st, rtr, bin, "bird", "-f", "-c", path, "-s", filepath.Join(StateDir, birdSockName))
}

// createBGPPolicy installs the peering CRD of the checkout the lab was
// built from and a policy: every node peers with the router and advertises
// LoadBalancer IPs.
func createBGPPolicy(ctx context.Context, dyn dynamic.Interface) error {
	_, file, _, _ := runtime.Caller(0)
	crd := filepath.Join(filepath.Dir(file), "..", "..", "deploy", "crds", "fastpathbgppeeringpolicies.yaml")
	if err := testenv.ApplyCRD(ctx, dyn, crd, bgp.PolicyGVR); err != nil {
		return err
	}
	p := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "fastpath.io/v1alpha1", "kind": "FastpathBGPPeeringPolicy",
		"metadata": map[string]any{"name": "lab"},
		"spec": map[string]any{
			"localASN": int64(nodeASN),
			"peers":    []any{map[string]any{"address": routerIP.String(), "asn": int64(routerASN)}},
		},
	}}
	_, err := dyn.Resource(bgp.PolicyGVR).Create(ctx, p, metav1.CreateOptions{})
	return err
}

// checkBGP: the router learned LBIP over BGP from the nodes, and the
// outside client, whose only way there is the router, reaches it.
func checkBGP(nodes int) check {
	name := fmt.Sprintf("BGP: router learned %s; outside client reached it", LBIP)
	if _, err := exec.LookPath("bird"); err != nil {
		return check{name: name, err: fmt.Errorf("bird is not installed (hack/install-deps.sh installs bird2)")}
	}
	var hops []netip.Addr
	var err error
	for deadline := time.Now().Add(agentTimeout); ; time.Sleep(200 * time.Millisecond) {
		hops, err = birdc.NextHops(filepath.Join(StateDir, birdSockName), netip.PrefixFrom(LBIP, 32))
		if err == nil && len(hops) == nodes || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || len(hops) == 0 {
		return check{name: name, err: fmt.Errorf("the router has no route to %s (%v)", LBIP, err)}
	}
	var from []string
	for _, h := range hops {
		for i := 1; i <= nodes; i++ {
			if nodeIP(i) == h {
				from = append(from, nodeName(i))
			}
		}
	}
	out, err := nettopo.OpenNS(outsideNSName())
	if err != nil {
		return check{name: name, err: err}
	}
	defer out.Release()
	c := checkHTTP(out, name, fmt.Sprintf("http://%s/", LBIP), 20)
	c.detail = "from " + strings.Join(from, ", ") + "; " + c.detail
	return c
}
