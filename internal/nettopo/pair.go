package nettopo

import (
	"errors"
	"fmt"
	"net/netip"
)

// Pair is two "nodes" on one underlay link, each with one "pod" behind a
// veth: node i (0 or 1) has 192.168.77.(i+1)/24 on eth0 and forwards; its
// pod has 10.244.(i+1).2/24 on eth0 with the node's 10.244.(i+1).1 (on the
// node's interface "pod") as default gateway. Nothing routes one node's pod
// CIDR to the other: that is what the code under test or measure does.
type Pair struct {
	Nodes, Pods [2]*NS
}

// PairNodeIP, PairPodCIDR and PairPodIP are node i's addresses in a Pair.
func PairNodeIP(i int) netip.Addr { return netip.AddrFrom4([4]byte{192, 168, 77, byte(i + 1)}) }

func PairPodCIDR(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i + 1), 0}), 24)
}

func PairPodIP(i int) netip.Addr { return PairPodCIDR(i).Addr().Next().Next() }

// NewPair builds a Pair named fp-<tag>-<random>-{n1,n2,p1,p2}, the pods'
// interfaces with the given MTU.
func NewPair(tag string, podMTU int) (p *Pair, err error) {
	base := fmt.Sprintf("%s%s-%s", Prefix, tag, randomID())
	p = &Pair{}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	for i := range 2 {
		if p.Nodes[i], err = NewNS(fmt.Sprintf("%s-n%d", base, i+1)); err != nil {
			return p, err
		}
		if p.Pods[i], err = NewNS(fmt.Sprintf("%s-p%d", base, i+1)); err != nil {
			return p, err
		}
	}
	if err := Veth(p.Nodes[0], "eth0", p.Nodes[1], "eth0"); err != nil {
		return p, err
	}
	for i := range 2 {
		node, pod := p.Nodes[i], p.Pods[i]
		gw := PairPodCIDR(i).Addr().Next()
		steps := []func() error{
			func() error { return node.AddAddr("eth0", netip.PrefixFrom(PairNodeIP(i), 24)) },
			func() error { return node.Sysctl("net/ipv4/ip_forward", "1") },
			func() error { return Veth(pod, "eth0", node, "pod") },
			func() error { return pod.SetMTU("eth0", podMTU) },
			func() error { return node.AddAddr("pod", netip.PrefixFrom(gw, 24)) },
			func() error { return pod.AddAddr("eth0", netip.PrefixFrom(PairPodIP(i), 24)) },
			func() error { return pod.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), gw, "eth0") },
		}
		for _, s := range steps {
			if err := s(); err != nil {
				return p, err
			}
		}
	}
	return p, nil
}

// Close deletes the Pair's namespaces.
func (p *Pair) Close() error {
	var errs []error
	for i := range 2 {
		for _, ns := range []*NS{p.Nodes[i], p.Pods[i]} {
			if ns != nil {
				errs = append(errs, ns.Delete())
			}
		}
	}
	return errors.Join(errs...)
}
