package conformance

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/fastpath-net/fastpath/internal/nettopo"
	"github.com/fastpath-net/fastpath/internal/testenv"
	"github.com/fastpath-net/fastpath/test/internal/cplink"
)

// The address plan is the same in every contender's topology: the two
// topologies are separate namespaces, so identical addresses never meet,
// and one set of Kubernetes objects (whose endpoints carry these addresses)
// describes both.
//
//	pod hosts     10.244.<i>.2/24, node side 10.244.<i>.1 (inside --cluster-cidr)
//	external      10.99.0.2/24,   node side 10.99.0.1 = the Node's InternalIP
//	control plane node 169.254.<n>.2/30 <-> 169.254.<n>.1/30 in the testenv namespace
//	apiserver     192.0.2.1 (testenv's advertise address, the `kubernetes`
//	              Service's endpoint) is routed to a stand-in pod host
const (
	clusterCIDR = "10.244.0.0/16"
	nodeName    = "fp-node"  // the node both contenders run as
	otherNode   = "fp-other" // endpoints "elsewhere", for Local policies
	nodeZone    = "zone-a"
	otherZone   = "zone-b"
	nodeIPStr   = "10.99.0.1"
	extIPStr    = "10.99.0.2"
	// markerIPStr is the endpoint of the marker Service: no host has it,
	// nothing is ever sent to it.
	markerIPStr = "10.244.250.2"
	// markerDecoyIPStr is the marker's second endpoint, hinted for the
	// other zone: a proxy shows the marker only once it knows its node's
	// zone and leaves the decoy out (objects.go, marker.slice).
	markerDecoyIPStr = "10.244.250.3"
	// apiserverStandIn answers for the `kubernetes` Service's endpoint.
	apiserverStandIn = "apiserver"
)

var (
	nodeIP = netip.MustParseAddr(nodeIPStr)
	extIP  = netip.MustParseAddr(extIPStr)
)

// podHosts are the pod-network hosts: a client and the backends. Their
// index gives the address 10.244.<index>.2.
var podHosts = []struct {
	name  string
	index int
}{
	{"client", 1}, {"be1", 2}, {"be2", 3}, {"be3", 4}, {"be4", 5}, {apiserverStandIn, 9},
}

// backendPorts are where every backend serves (TCP and UDP).
var backendPorts = []int{8080, 8081, 9090}

// podAddr is the address of a pod host by name.
func podAddr(name string) netip.Addr {
	for _, h := range podHosts {
		if h.name == name {
			return netip.AddrFrom4([4]byte{10, 244, byte(h.index), 2})
		}
	}
	panic("conformance: no pod host " + name)
}

// Host is one leaf of a Topology.
type Host struct {
	Name   string
	NS     *nettopo.NS
	Addr   netip.Addr
	NodeIf string     // the node's interface facing this host
	NodeIP netip.Addr // the node's address on it
}

// Topology is one contender's node: a router namespace with the pod hosts,
// the external client and a link to the control plane's namespace.
type Topology struct {
	Tag   string
	Node  *nettopo.NS
	Hosts map[string]*Host
	// APIServerURL reaches the apiserver from inside the node namespace.
	APIServerURL string
	// CPLinkAddr is the node's address on the control-plane link.
	CPLinkAddr netip.Addr

	servers []*server
	sctp    *sctpSniffers
}

// nsPrefix starts every namespace this package creates; the PID lets a later
// run remove what a killed run left behind.
func nsPrefix() string { return fmt.Sprintf("%scf%d-", nettopo.Prefix, os.Getpid()) }

// cpSANs are the control-plane side addresses of every contender's link;
// the apiserver's certificate must name them.
func cpSANs() []string { return cplink.SANs(2) }

// NewTopology builds contender number n's node (n picks the control-plane
// link's subnet). Everything lives in fp-cf<pid>-<tag>-* namespaces; Close
// deletes them, and with them every rule a proxy wrote inside.
func NewTopology(tag string, n int, env *testenv.Env) (t *Topology, err error) {
	base := nsPrefix() + tag
	node, err := nettopo.NewNS(base + "-node")
	if err != nil {
		return nil, err
	}
	t = &Topology{Tag: tag, Node: node, Hosts: map[string]*Host{}}
	defer func() {
		if err != nil {
			t.Close()
			t = nil
		}
	}()
	// ICMP errors (REJECT's port-unreachable) are rate limited per peer by
	// default, which would turn some "refused" into "timeout" when a case
	// probes quickly; the limits are per namespace.
	for k, v := range map[string]string{
		"net/ipv4/ip_forward": "1", "net/ipv4/icmp_ratelimit": "0",
		"net/ipv4/icmp_msgs_per_sec": "100000", "net/ipv4/icmp_msgs_burst": "100000",
	} {
		if err := node.Sysctl(k, v); err != nil {
			return nil, err
		}
	}
	for _, ph := range podHosts {
		addr := podAddr(ph.name)
		gw := netip.AddrFrom4([4]byte{10, 244, byte(ph.index), 1})
		if _, err := t.addHost(base, ph.name, netip.PrefixFrom(addr, 24), gw); err != nil {
			return nil, err
		}
	}
	ext, err := t.addHost(base, "ext", netip.PrefixFrom(extIP, 24), nodeIP)
	if err != nil {
		return nil, err
	}
	// The node's default route leads out, as on a real node: a packet to a
	// Service IP no rule claims is forwarded there and lost (the external
	// host does not forward), and a packet some rule rejects or drops in
	// the forward path is routed first - without a route it would get
	// "network unreachable" before any rule saw it.
	if err := node.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), ext.Addr, ext.NodeIf); err != nil {
		return nil, err
	}
	// The `kubernetes` Service's endpoint is the apiserver's advertise
	// address; in this topology a stand-in pod host owns it, so a probe to
	// the Service shows which endpoint the proxy chose.
	std := t.Hosts[apiserverStandIn]
	if err := std.NS.AddAddr("lo", netip.PrefixFrom(advertiseAddr, 32)); err != nil {
		return nil, err
	}
	if err := node.AddRoute(netip.PrefixFrom(advertiseAddr, 32), std.Addr, std.NodeIf); err != nil {
		return nil, err
	}
	if err := t.linkControlPlane(n, env); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *Topology) addHost(base, name string, addr netip.Prefix, gw netip.Addr) (*Host, error) {
	ns, err := nettopo.NewNS(base + "-" + name)
	if err != nil {
		return nil, err
	}
	h := &Host{Name: name, NS: ns, Addr: addr.Addr(), NodeIf: "h-" + name, NodeIP: gw}
	t.Hosts[name] = h // registered first, so Close removes a half-built host
	if err := nettopo.Veth(ns, "eth0", t.Node, h.NodeIf); err != nil {
		return nil, err
	}
	if err := ns.AddAddr("eth0", addr); err != nil {
		return nil, err
	}
	if err := t.Node.AddAddr(h.NodeIf, netip.PrefixFrom(gw, addr.Bits())); err != nil {
		return nil, err
	}
	if err := ns.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), gw, "eth0"); err != nil {
		return nil, err
	}
	return h, nil
}

// linkControlPlane joins the node namespace to the testenv's namespace
// (cplink), link number n.
func (t *Topology) linkControlPlane(n int, env *testenv.Env) error {
	l, err := cplink.Add(t.Node, env, n, t.Tag)
	if err != nil {
		return err
	}
	t.CPLinkAddr, t.APIServerURL = l.NodeAddr, l.APIServerURL
	return nil
}

// NodeInterfaces are the node's interfaces toward its hosts (not the
// control-plane link).
func (t *Topology) NodeInterfaces() []string {
	return append(t.PodInterfaces(), t.Hosts["ext"].NodeIf)
}

// PodInterfaces are the node's interfaces facing pods (not the uplink).
func (t *Topology) PodInterfaces() []string {
	var out []string
	for _, ph := range podHosts {
		out = append(out, t.Hosts[ph.name].NodeIf)
	}
	return out
}

// NodeAddrs are every address the node has on its host-facing interfaces;
// a backend that sees one of them as its peer saw a masqueraded connection.
func (t *Topology) NodeAddrs() map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	for _, h := range t.Hosts {
		out[h.NodeIP] = true
	}
	out[t.CPLinkAddr] = true
	return out
}

// StartServers runs the echo servers: every backend on backendPorts, the
// apiserver stand-in on the apiserver's port.
func (t *Topology) StartServers() error {
	for _, ph := range podHosts {
		h := t.Hosts[ph.name]
		var ports []int
		switch {
		case ph.name == apiserverStandIn:
			ports = []int{testenv.APIServerPort}
		case strings.HasPrefix(ph.name, "be"):
			ports = backendPorts
		}
		for _, p := range ports {
			addr := h.Addr
			if ph.name == apiserverStandIn {
				addr = advertiseAddr
			}
			s, err := startServer(h.NS, ph.name+":"+strconv.Itoa(p), netip.AddrPortFrom(addr, uint16(p)).String())
			if err != nil {
				return err
			}
			t.servers = append(t.servers, s)
		}
	}
	var backends []*Host
	for _, ph := range podHosts {
		if strings.HasPrefix(ph.name, "be") {
			backends = append(backends, t.Hosts[ph.name])
		}
	}
	var err error
	t.sctp, err = startSCTPSniffers(backends)
	return err
}

// Close stops the servers and deletes every namespace of the topology.
func (t *Topology) Close() error {
	for _, s := range t.servers {
		s.Close()
	}
	t.servers = nil
	if t.sctp != nil {
		t.sctp.Close()
		t.sctp = nil
	}
	var errs []error
	for name, h := range t.Hosts {
		errs = append(errs, h.NS.Delete())
		delete(t.Hosts, name)
	}
	if t.Node != nil {
		errs = append(errs, t.Node.Delete())
		t.Node = nil
	}
	return errors.Join(errs...)
}

// collectLeftovers deletes fp-cf<pid>-* namespaces and bpffs directories
// of test processes that died without cleaning up (their proxies died with
// them: Pdeathsig).
func collectLeftovers() {
	collectPinLeftovers()
	entries, err := os.ReadDir("/run/netns")
	if err != nil {
		return
	}
	prefix := nettopo.Prefix + "cf"
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, 0) == syscall.ESRCH {
			_ = nettopo.DeleteNS(e.Name())
		}
	}
}
