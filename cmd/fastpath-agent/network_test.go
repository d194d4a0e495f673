package main

import (
	"net/netip"
	"slices"
	"testing"
)

func TestNetworkFlags(t *testing.T) {
	base := []string{"--services-file", "s.yaml", "--interfaces", "eth1,eth2"}
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string
		ext     []string
		ip      string
		min     uint16
		max     uint16
	}{
		{name: "defaults", min: 61000, max: 65535},
		{name: "all", args: []string{"--external-interfaces", "eth0", "--masquerade-ip", "192.0.2.1", "--snat-ports", "50000-50099"},
			ext: []string{"eth0"}, ip: "192.0.2.1", min: 50000, max: 50099},
		{name: "both roles", args: []string{"--external-interfaces", "eth2"}, wantErr: "one role"},
		{name: "ipv6", args: []string{"--masquerade-ip", "fd00::1"}, wantErr: "IPv4"},
		{name: "bad range", args: []string{"--snat-ports", "65000-61000"}, wantErr: "MIN-MAX"},
		{name: "no range", args: []string{"--snat-ports", "61000"}, wantErr: "MIN-MAX"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("KUBERNETES_SERVICE_HOST", "")
			cfg, ok := parseWant(t, append(append([]string{}, base...), tc.args...), tc.wantErr)
			if !ok {
				return
			}
			n := cfg.Network
			var ip netip.Addr
			if tc.ip != "" {
				ip = netip.MustParseAddr(tc.ip)
			}
			if !slices.Equal(n.ExternalInterfaces, tc.ext) || n.Masquerade.IP != ip ||
				n.Masquerade.PortMin != tc.min || n.Masquerade.PortMax != tc.max {
				t.Errorf("network %+v", n)
			}
		})
	}
}
