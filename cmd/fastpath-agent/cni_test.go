package main

import (
	"testing"

	"github.com/fastpath-net/fastpath/internal/datapath"
)

// TestCNIFlags: the CNI is off without --cni-socket, and its flags are
// checked and named when they are wrong.
func TestCNIFlags(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	file := []string{"--services-file", "s.yaml"}
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "off", args: file},
		{name: "standalone", args: append([]string{"--cni-socket", "/s", "--pod-cidr", "10.244.1.0/24,fd00::/120"}, file...)},
		{name: "kubernetes", args: []string{"--kubeconfig", "k", "--node-name", "n", "--cni-socket", "/s"}},
		{name: "no pod cidr", args: append([]string{"--cni-socket", "/s"}, file...), wantErr: "--pod-cidr"},
		{name: "cidr without socket", args: append([]string{"--pod-cidr", "10.0.0.0/24"}, file...), wantErr: "need --cni-socket"},
		{name: "bad cidr", args: append([]string{"--cni-socket", "/s", "--pod-cidr", "10.0.0.0"}, file...), wantErr: "--pod-cidr"},
		{name: "bad mtu", args: append([]string{"--cni-socket", "/s", "--pod-cidr", "10.0.0.0/24", "--cni-mtu", "100"}, file...), wantErr: "--cni-mtu=100"},
		{name: "bad tc mode", args: append([]string{"--cni-socket", "/s", "--pod-cidr", "10.0.0.0/24", "--cni-tc-mode", "xdp"}, file...), wantErr: "--cni-tc-mode"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, ok := parseWant(t, tc.args, tc.wantErr)
			if !ok {
				return
			}
			if tc.name == "off" {
				if cfg.CNI != nil {
					t.Fatalf("CNI %+v without --cni-socket", *cfg.CNI)
				}
				return
			}
			if cfg.CNI == nil || cfg.CNI.Socket != "/s" || cfg.CNI.TC != datapath.TCAuto || cfg.CNI.ConfDir != "/etc/cni/net.d" {
				t.Fatalf("CNI %+v", cfg.CNI)
			}
		})
	}
}
