package main

import "testing"

func TestBGPFlags(t *testing.T) {
	kube := []string{"--kubeconfig", "k.yaml", "--node-name", "n1"}
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string
		port    int
	}{
		{name: "off", args: kube},
		{name: "on", args: append([]string{"--enable-bgp"}, kube...), port: 179},
		{name: "port", args: append([]string{"--enable-bgp", "--bgp-listen-port", "1790"}, kube...), port: 1790},
		{name: "standalone", args: []string{"--services-file", "s.yaml", "--enable-bgp"}, wantErr: "--kubeconfig"},
		{name: "bad port", args: append([]string{"--enable-bgp", "--bgp-listen-port", "70000"}, kube...), wantErr: "--bgp-listen-port"},
		{name: "no namespace", args: append([]string{"--enable-bgp", "--bgp-secret-namespace", ""}, kube...), wantErr: "--bgp-secret-namespace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("KUBERNETES_SERVICE_HOST", "")
			cfg, ok := parseWant(t, tc.args, tc.wantErr)
			if !ok {
				return
			}
			if tc.port == 0 {
				if cfg.BGP != nil {
					t.Fatalf("BGP on: %+v", cfg.BGP)
				}
				return
			}
			if cfg.BGP == nil || cfg.BGP.ListenPort != tc.port || cfg.BGP.SecretNamespace != "kube-system" {
				t.Fatalf("BGP %+v", cfg.BGP)
			}
		})
	}
}
