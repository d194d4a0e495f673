package main

import (
	"io"
	"strings"
	"testing"

	"github.com/fastpath-net/fastpath/internal/agent"
)

// TestSourceSelection: exactly one source of services, chosen by flags,
// with in-cluster Kubernetes only when nothing else is asked for.
func TestSourceSelection(t *testing.T) {
	for _, tc := range []struct {
		name      string
		args      []string
		inCluster bool
		wantErr   string // substring; "" for success
		wantKube  string // "" no Kubernetes source, "in-cluster", or the kubeconfig path
		wantNode  string
		wantCIDRs string // space-separated, masked
		wantProxy string
	}{
		{name: "nothing", wantErr: agent.ErrNoSource.Error()},
		{name: "file", args: []string{"--services-file", "s.yaml"}},
		{name: "kubeconfig", args: []string{"--kubeconfig", "k.conf", "--node-name", "n1"}, wantKube: "k.conf", wantNode: "n1"},
		{name: "both", args: []string{"--kubeconfig", "k.conf", "--services-file", "s.yaml"}, wantErr: "not both"},
		{name: "in a pod", inCluster: true, args: []string{"--node-name", "n1"}, wantKube: "in-cluster", wantNode: "n1"},
		{name: "file in a pod", inCluster: true, args: []string{"--services-file", "s.yaml"}},
		{name: "node name without kubernetes", args: []string{"--services-file", "s.yaml", "--node-name", "n1"}, wantErr: "need the Kubernetes source"},
		{name: "cidrs", args: []string{"--kubeconfig", "k", "--node-name", "n", "--nodeport-addresses", "192.168.1.7/16, 10.0.0.0/8"},
			wantKube: "k", wantNode: "n", wantCIDRs: "192.168.0.0/16 10.0.0.0/8"},
		{name: "bad cidr", args: []string{"--kubeconfig", "k", "--nodeport-addresses", "primary"}, wantErr: "not a CIDR"},
		{name: "proxy name", args: []string{"--kubeconfig", "k", "--node-name", "n", "--service-proxy-name", "fastpath"},
			wantKube: "k", wantNode: "n", wantProxy: "fastpath"},
		{name: "bad proxy name", args: []string{"--kubeconfig", "k", "--service-proxy-name", "fast path"},
			wantErr: `--service-proxy-name: "fast path" is not a label value`},
		{name: "proxy name without kubernetes", args: []string{"--services-file", "s.yaml", "--service-proxy-name", "fastpath"},
			wantErr: "need the Kubernetes source"},
		{name: "policy without kubernetes", args: []string{"--services-file", "s.yaml", "--enable-policy"}, wantErr: "--enable-policy"},
		{name: "policy", args: []string{"--kubeconfig", "k", "--node-name", "n", "--enable-policy"}, wantKube: "k", wantNode: "n"},
		{name: "l7 without policy", args: []string{"--kubeconfig", "k", "--node-name", "n", "--enable-l7-proxy"}, wantErr: "give --enable-policy"},
		{name: "l7 port", args: []string{"--kubeconfig", "k", "--node-name", "n", "--enable-policy", "--enable-l7-proxy", "--l7-proxy-port", "70000"}, wantErr: "--l7-proxy-port 70000"},
		{name: "l7", args: []string{"--kubeconfig", "k", "--node-name", "n", "--enable-policy", "--enable-l7-proxy"}, wantKube: "k", wantNode: "n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host := ""
			if tc.inCluster {
				host = "10.96.0.1"
			}
			t.Setenv("KUBERNETES_SERVICE_HOST", host)
			cfg, ok := parseWant(t, tc.args, tc.wantErr)
			if !ok {
				return
			}
			checkKube(t, cfg.Kubernetes, tc.wantKube, tc.wantNode, tc.wantCIDRs)
			if cfg.Kubernetes != nil && cfg.Kubernetes.ProxyName != tc.wantProxy {
				t.Errorf("proxy name %q, want %q", cfg.Kubernetes.ProxyName, tc.wantProxy)
			}
		})
	}
}

func checkKube(t *testing.T, k *agent.Kubernetes, wantKube, wantNode, wantCIDRs string) {
	t.Helper()
	switch {
	case wantKube == "" && k != nil:
		t.Fatalf("Kubernetes source %+v, want none", *k)
	case wantKube == "":
		return
	case k == nil:
		t.Fatalf("no Kubernetes source, want %s", wantKube)
	}
	if got := map[bool]string{true: "in-cluster", false: k.Kubeconfig}[k.Kubeconfig == ""]; got != wantKube {
		t.Errorf("kubeconfig %q, want %q", got, wantKube)
	}
	if k.NodeName != wantNode {
		t.Errorf("node name %q, want %q", k.NodeName, wantNode)
	}
	if got := fmtPrefixes(k); got != wantCIDRs {
		t.Errorf("CIDRs %v, want %s", k.NodePortCIDRs, wantCIDRs)
	}
}

func fmtPrefixes(k *agent.Kubernetes) string {
	var s []string
	for _, p := range k.NodePortCIDRs {
		s = append(s, p.String())
	}
	return strings.Join(s, " ")
}

// parseWant parses args and checks the outcome: with wantErr, an error
// containing it (ok false: nothing more to check); without, success.
func parseWant(t *testing.T, args []string, wantErr string) (cfg agent.Config, ok bool) {
	t.Helper()
	cfg, _, err := parseFlags(args, io.Discard)
	if wantErr != "" {
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("error %v, want one containing %q", err, wantErr)
		}
		return cfg, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return cfg, true
}
