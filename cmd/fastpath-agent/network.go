package main

import (
	"flag"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/fastpath-net/fastpath/internal/agent"
	"github.com/fastpath-net/fastpath/internal/datapath"
)

// networkFlags are the flags of agent.Network.
type networkFlags struct {
	external, masqIP, ports, clusterCIDR *string
}

func addNetworkFlags(fs *flag.FlagSet) networkFlags {
	return networkFlags{
		external: fs.String("external-interfaces", "", "comma-separated interfaces facing outside the cluster (NodePort/LoadBalancer/externalIPs traffic): "+
			"they see only external service entries, and their traffic is masqueraded unless externalTrafficPolicy is Local"),
		masqIP: fs.String("masquerade-ip", "", "IPv4 address masqueraded flows get as source; empty: the first IPv4 of the external interfaces, else of --interfaces"),
		clusterCIDR: fs.String("cluster-cidr", "", "comma-separated CIDRs of the cluster's pods: pod TCP/UDP traffic to addresses outside them "+
			"is masqueraded to the node's address; empty: no such masquerade"),
		ports: fs.String("snat-ports", fmt.Sprintf("%d-%d", datapath.DefaultSNATPorts[0], datapath.DefaultSNATPorts[1]),
			"port range of masqueraded flows, MIN-MAX; keep it outside net.ipv4.ip_local_port_range"),
	}
}

// network parses the flags; internal are the --interfaces, which must not
// also be external.
func (f networkFlags) network(internal []string) (agent.Network, error) {
	var n agent.Network
	if *f.external != "" {
		n.ExternalInterfaces = strings.Split(*f.external, ",")
	}
	for _, name := range n.ExternalInterfaces {
		if slices.Contains(internal, name) {
			return n, fmt.Errorf("--external-interfaces: %s is in --interfaces too; an interface has one role", name)
		}
	}
	if *f.masqIP != "" {
		ip, err := netip.ParseAddr(*f.masqIP)
		if err != nil || !ip.Is4() {
			return n, fmt.Errorf("--masquerade-ip %q: want an IPv4 address", *f.masqIP)
		}
		n.Masquerade.IP = ip
	}
	cidrs, err := parseCIDRs(*f.clusterCIDR)
	if err != nil {
		return n, fmt.Errorf("--cluster-cidr: %w", err)
	}
	for _, p := range cidrs {
		if !p.Addr().Is4() {
			return n, fmt.Errorf("--cluster-cidr %s: only IPv4 is supported", p)
		}
	}
	n.Masquerade.ClusterCIDRs = cidrs
	lo, hi, ok := strings.Cut(*f.ports, "-")
	min, err1 := strconv.ParseUint(lo, 10, 16)
	max, err2 := strconv.ParseUint(hi, 10, 16)
	if !ok || err1 != nil || err2 != nil || min == 0 || min > max {
		return n, fmt.Errorf("--snat-ports %q: want MIN-MAX with 1 <= MIN <= MAX <= 65535", *f.ports)
	}
	n.Masquerade.PortMin, n.Masquerade.PortMax = uint16(min), uint16(max)
	return n, nil
}
