package agent

import (
	"fmt"

	"github.com/fastpath-net/fastpath/internal/datapath"
)

// Network is how the node meets the outside world: which interfaces face
// it, and the source NAT of traffic that must come back through this node.
type Network struct {
	// ExternalInterfaces face outside the cluster: NodePort, LoadBalancer
	// and externalIPs traffic arrives there (datapath.RoleExternal).
	ExternalInterfaces []string
	// Masquerade is the node's source NAT. An invalid IP means the first
	// IPv4 address of the external interfaces, else of the interfaces.
	Masquerade datapath.Masquerade
}

// datapathConfig is what the datapath is loaded with.
func datapathConfig(cfg Config) (datapath.Config, error) {
	masq, err := masquerade(cfg)
	if err != nil {
		return datapath.Config{}, err
	}
	sizes := cfg.Sizes
	if sizes.CT == 0 {
		if sizes.CT, err = ctEntries(cfg); err != nil {
			return datapath.Config{}, err
		}
	}
	return datapath.Config{PinDir: cfg.PinDir, Sizes: sizes, TC: cfg.TC, Masquerade: masq, Policy: cfg.Policy,
		RecreateIncompatible: cfg.RecreateIncompatibleMaps, L7: cfg.L7Proxy != nil}, nil
}

// ctEntries sizes fp_ct when --ct-max is 0: the size of the pinned map if
// there is one (a new size would be a new, empty map: every connection
// lost), else CTMemoryRatio of the node's RAM.
func ctEntries(cfg Config) (int, error) {
	pinDir := cfg.PinDir
	if pinDir == "" {
		pinDir = datapath.DefaultPinDir
	}
	pinned, err := datapath.PinnedCTEntries(pinDir)
	if err != nil {
		return 0, err
	}
	if pinned > 0 {
		cfg.Log.Info("conntrack map keeps its pinned size", "entries", pinned)
		return pinned, nil
	}
	mem, err := datapath.MemTotal()
	if err != nil {
		return 0, err
	}
	ratio := cfg.CTMemoryRatio
	if ratio == 0 {
		ratio = datapath.DefaultCTMemoryRatio
	}
	n := datapath.CTEntriesFor(mem, ratio)
	cfg.Log.Info("conntrack map sized from node memory", "entries", n, "memTotalBytes", mem, "ratio", ratio,
		"mapBytes", n*datapath.CTEntryBytes)
	return n, nil
}

// masquerade returns cfg's masquerade settings with the address filled in
// when none was given: the node's address on the external interfaces, where
// kube-proxy's MASQUERADE would take it from, else on the others.
func masquerade(cfg Config) (datapath.Masquerade, error) {
	m := cfg.Network.Masquerade
	ifaces := append(append([]string{}, cfg.Network.ExternalInterfaces...), cfg.Interfaces...)
	if m.IP.IsValid() || len(ifaces) == 0 {
		return m, nil
	}
	ip, err := datapath.FirstIPv4(cfg.NetNS, ifaces...)
	if err != nil {
		return m, fmt.Errorf("masquerade address (give --masquerade-ip): %w", err)
	}
	cfg.Log.Info("masquerading with the node's address", "address", ip.String())
	m.IP = ip
	return m, nil
}

// attachExternal attaches the external-role load balancer.
func (a *Agent) attachExternal() error {
	for _, name := range a.cfg.Network.ExternalInterfaces {
		ifc := datapath.Iface{NetNS: a.cfg.NetNS, Name: name}
		mode, err := a.dp.AttachTCRole(ifc, datapath.RoleExternal)
		if err != nil {
			return err
		}
		a.log.Info("attached per-packet load balancer", "interface", ifc.String(), "role", "external", "mode", string(mode))
	}
	return nil
}
