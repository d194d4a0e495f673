package main

import "testing"

// TestBGPFlagRefused: --enable-bgp (on the command line or from an old
// ConfigMap) fails naming fastpath-bgp; off, it changes nothing.
func TestBGPFlagRefused(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	kube := []string{"--kubeconfig", "k.yaml", "--node-name", "n1"}
	parseWant(t, kube, "")
	parseWant(t, append([]string{"--enable-bgp=false"}, kube...), "")
	parseWant(t, append([]string{"--enable-bgp"}, kube...), "run fastpath-bgp")
	parseWant(t, append([]string{"--bgp-listen-port", "179"}, kube...), "bgp-listen-port")
}
