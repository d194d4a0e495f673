package main

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/fastpath-net/fastpath/internal/routing"
)

func TestRoutingAndClusterCIDRFlags(t *testing.T) {
	kube := []string{"--kubeconfig", "k", "--node-name", "n1", "--external-interfaces", "eth0"}
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "native", args: append([]string{"--routing-mode", "native", "--cluster-cidr", "10.244.0.0/16"}, kube...)},
		{name: "vxlan", args: append([]string{"--routing-mode", "vxlan"}, kube...)},
		{name: "bad mode", args: append([]string{"--routing-mode", "geneve"}, kube...), wantErr: `routing mode "geneve"`},
		{name: "no kubernetes", args: []string{"--routing-mode", "native", "--services-file", "s", "--external-interfaces", "eth0"}, wantErr: "--kubeconfig"},
		{name: "no uplink", args: []string{"--routing-mode", "native", "--kubeconfig", "k", "--node-name", "n1"}, wantErr: "--external-interfaces"},
		{name: "bad cluster cidr", args: append([]string{"--cluster-cidr", "10.244.0.0"}, kube...), wantErr: "--cluster-cidr"},
		{name: "ipv6 cluster cidr", args: append([]string{"--cluster-cidr", "fd00::/64"}, kube...), wantErr: "only IPv4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("KUBERNETES_SERVICE_HOST", "")
			cfg, ok := parseWant(t, tc.args, tc.wantErr)
			if !ok {
				return
			}
			if mode := cfg.Routing.Mode; mode != routing.Mode(tc.name) {
				t.Errorf("mode %q, want %q", mode, tc.name)
			}
			if tc.name == "native" && !slices.Equal(cfg.Network.Masquerade.ClusterCIDRs, []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}) {
				t.Errorf("cluster CIDRs %v", cfg.Network.Masquerade.ClusterCIDRs)
			}
		})
	}
}
