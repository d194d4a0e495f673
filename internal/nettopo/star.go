package nettopo

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
)

// Star is a router namespace ("node") with hosts hanging off it, each host on
// its own /24 over a veth pair: host i has 10.250.i.2 on eth0 and the node
// has 10.250.i.1 on the interface named after the host. The node forwards.
// Addresses only exist inside these namespaces, so parallel Stars never clash.
type Star struct {
	Node  *NS
	Hosts []*Host
}

// Host is one leaf of a Star.
type Host struct {
	Name   string // short name given to NewStar
	NS     *NS
	Addr   netip.Addr // the host's address
	NodeIf string     // the node-side interface facing this host
	NodeIP netip.Addr // the node's address on that interface
}

// NewStar builds a node and one host per name. tag makes the namespace names
// readable (fp-<tag>-<random>-<name>); names must be at most 12 characters.
func NewStar(tag string, names ...string) (*Star, error) {
	return NewStarNamed(fmt.Sprintf("%s%s-%s", Prefix, tag, randomID()), names...)
}

// NewStarNamed is NewStar with fixed namespace names <base>-node and
// <base>-<name>, for topologies that others must find by name (the lab).
func NewStarNamed(base string, names ...string) (s *Star, err error) {
	node, err := NewNS(base + "-node")
	if err != nil {
		return nil, err
	}
	s = &Star{Node: node}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if err := node.Sysctl("net/ipv4/ip_forward", "1"); err != nil {
		return nil, err
	}
	for i, name := range names {
		h, err := s.addHost(base+"-"+name, name, i+1)
		if err != nil {
			return nil, err
		}
		s.Hosts = append(s.Hosts, h)
	}
	return s, nil
}

func (s *Star) addHost(nsName, name string, i int) (*Host, error) {
	if len(name) > 12 {
		return nil, fmt.Errorf("host %q: name longer than 12 characters", name)
	}
	ns, err := NewNS(nsName)
	if err != nil {
		return nil, err
	}
	h := &Host{
		Name:   name,
		NS:     ns,
		Addr:   netip.AddrFrom4([4]byte{10, 250, byte(i), 2}),
		NodeIP: netip.AddrFrom4([4]byte{10, 250, byte(i), 1}),
		NodeIf: "h-" + name,
	}
	// Register before configuring, so Close removes a half-built host too.
	s.Hosts = append(s.Hosts, h)
	defer func() { s.Hosts = s.Hosts[:len(s.Hosts)-1] }()
	if err := Veth(ns, "eth0", s.Node, h.NodeIf); err != nil {
		return nil, err
	}
	if err := ns.AddAddr("eth0", netip.PrefixFrom(h.Addr, 24)); err != nil {
		return nil, err
	}
	if err := s.Node.AddAddr(h.NodeIf, netip.PrefixFrom(h.NodeIP, 24)); err != nil {
		return nil, err
	}
	if err := ns.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), h.NodeIP, "eth0"); err != nil {
		return nil, err
	}
	return h, nil
}

// Host returns the host with the given short name, or nil.
func (s *Star) Host(name string) *Host {
	for _, h := range s.Hosts {
		if h.Name == name {
			return h
		}
	}
	return nil
}

// Sysctl writes a per-namespace sysctl in the node's namespace and every
// host's.
func (s *Star) Sysctl(key, value string) error {
	if err := s.Node.Sysctl(key, value); err != nil {
		return err
	}
	for _, h := range s.Hosts {
		if err := h.NS.Sysctl(key, value); err != nil {
			return err
		}
	}
	return nil
}

// NodeInterfaces lists the node-side interface of every host.
func (s *Star) NodeInterfaces() []string {
	out := make([]string, len(s.Hosts))
	for i, h := range s.Hosts {
		out[i] = h.NodeIf
	}
	return out
}

// Close deletes every namespace of the Star; it is safe to call twice.
func (s *Star) Close() error {
	var errs []error
	for _, h := range s.Hosts {
		if h.NS != nil {
			errs = append(errs, h.NS.Delete())
		}
	}
	s.Hosts = nil
	if s.Node != nil {
		errs = append(errs, s.Node.Delete())
		s.Node = nil
	}
	return errors.Join(errs...)
}

func randomID() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
