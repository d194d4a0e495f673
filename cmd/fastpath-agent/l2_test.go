package main

import (
	"slices"
	"testing"
	"time"
)

func TestL2Flags(t *testing.T) {
	kube := []string{"--kubeconfig", "k.yaml", "--node-name", "n1"}
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string
		ifaces  []string
		lease   time.Duration
	}{
		{name: "off", args: kube},
		{name: "on", args: append([]string{"--l2-announce-interfaces", "eth0,eth1"}, kube...), ifaces: []string{"eth0", "eth1"}, lease: 15 * time.Second},
		{name: "lease", args: append([]string{"--l2-announce-interfaces", "eth0", "--l2-lease-duration", "4s"}, kube...), ifaces: []string{"eth0"}, lease: 4 * time.Second},
		{name: "standalone", args: []string{"--services-file", "s.yaml", "--l2-announce-interfaces", "eth0"}, wantErr: "--kubeconfig"},
		{name: "short lease", args: append([]string{"--l2-announce-interfaces", "eth0", "--l2-lease-duration", "10ms"}, kube...), wantErr: "--l2-lease-duration"},
		{name: "no namespace", args: append([]string{"--l2-announce-interfaces", "eth0", "--l2-lease-namespace", ""}, kube...), wantErr: "--l2-lease-namespace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("KUBERNETES_SERVICE_HOST", "")
			cfg, ok := parseWant(t, tc.args, tc.wantErr)
			if !ok {
				return
			}
			if tc.ifaces == nil {
				if cfg.L2 != nil {
					t.Fatalf("L2 on: %+v", cfg.L2)
				}
				return
			}
			if cfg.L2 == nil || !slices.Equal(cfg.L2.Interfaces, tc.ifaces) || cfg.L2.LeaseDuration != tc.lease || cfg.L2.LeaseNamespace != "kube-system" {
				t.Fatalf("L2 %+v", cfg.L2)
			}
		})
	}
}
