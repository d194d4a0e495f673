package cniserver

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// ConflistName is the file the agent installs in the runtime's CNI
// configuration directory. "10-" sorts it before most others: runtimes
// use the first network configuration in lexical order.
const ConflistName = "10-fastpath.conflist"

// Conflist describes the network configuration the agent installs.
type Conflist struct {
	Network string // network name; default "fastpath"
	Socket  string // the agent's API socket
	MTU     int    // pod MTU; 0: the agent's default
	// Chained plugins run after fastpath-cni, in order: portmap and
	// bandwidth get the capabilities runtimes fill in (portMappings,
	// bandwidth); any other name gets a bare {"type": name}.
	Chained []string
}

// DefaultNetwork is the network name of the installed conflist.
const DefaultNetwork = "fastpath"

// Bytes renders the conflist (CNI 1.1.0).
func (c Conflist) Bytes() ([]byte, error) {
	name := c.Network
	if name == "" {
		name = DefaultNetwork
	}
	self := map[string]any{"type": "fastpath-cni", "socket": c.Socket}
	if c.MTU != 0 {
		self["mtu"] = c.MTU
	}
	plugins := []any{self}
	for _, p := range c.Chained {
		entry := map[string]any{"type": p}
		switch p {
		case "portmap":
			entry["capabilities"] = map[string]bool{"portMappings": true}
		case "bandwidth":
			entry["capabilities"] = map[string]bool{"bandwidth": true}
		}
		plugins = append(plugins, entry)
	}
	return json.MarshalIndent(map[string]any{"cniVersion": "1.1.0", "name": name, "plugins": plugins}, "", "  ")
}

// Install writes the conflist into dir atomically and returns its path.
func (c Conflist) Install(dir string) (string, error) {
	data, err := c.Bytes()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("cni configuration directory: %w", err)
	}
	path := filepath.Join(dir, ConflistName)
	tmp := filepath.Join(dir, "."+ConflistName+".tmp")
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return "", err
	}
	return path, nil
}
