package deploy

import (
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"github.com/fastpath-net/fastpath/internal/bgp"
	"github.com/fastpath-net/fastpath/internal/testenv"
)

// TestBGPPolicyValidation: the apiserver refuses bad ASNs, peer addresses
// and timers in a FastpathBGPPeeringPolicy, naming the field, and takes the
// example; bgp.ParsePolicy agrees with it on each case.
func TestBGPPolicyValidation(t *testing.T) {
	env := testenv.StartForTest(t, testenv.Options{NoControllerManager: true})
	dyn, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	testenv.InstallCRD(t, dyn, filepath.Join(deployDir, "crds", "fastpathbgppeeringpolicies.yaml"), bgp.PolicyGVR)
	a := newApplier(t, env)
	objs, err := readObjects(filepath.Join(deployDir, "agent", "bgppeeringpolicy.example.yaml"))
	if err != nil || len(objs) != 1 {
		t.Fatalf("example: %v (%d objects)", err, len(objs))
	}
	example := objs[0]
	if err := a.apply(t, example, true); err != nil {
		t.Fatalf("example refused: %v", err)
	}
	if _, err := bgp.ParsePolicy(example); err != nil {
		t.Fatalf("example does not parse: %v", err)
	}
	peer := func(fields map[string]any) []any {
		p := map[string]any{"address": "192.0.2.1", "asn": int64(64500)}
		for k, v := range fields {
			p[k] = v
		}
		return []any{p}
	}
	for _, c := range []struct {
		name  string
		path  []string
		value any
		want  string // in the apiserver's error
	}{
		{"ASN 0", []string{"spec", "localASN"}, int64(0), "spec.localASN"},
		{"ASN over 32 bits", []string{"spec", "localASN"}, int64(4294967296), "spec.localASN"},
		{"AS_TRANS", []string{"spec", "localASN"}, int64(23456), "spec.localASN"},
		{"peer ASN 65535", []string{"spec", "peers"}, peer(map[string]any{"asn": int64(65535)}), "spec.peers[0].asn"},
		{"peer address not an IP", []string{"spec", "peers"}, peer(map[string]any{"address": "router.example"}), "spec.peers[0].address"},
		{"peer address loopback", []string{"spec", "peers"}, peer(map[string]any{"address": "127.0.0.1"}), "spec.peers[0].address"},
		{"peer address multicast", []string{"spec", "peers"}, peer(map[string]any{"address": "ff02::1"}), "spec.peers[0].address"},
		{"hold time 1", []string{"spec", "peers"}, peer(map[string]any{"holdTimeSeconds": int64(1)}), "spec.peers[0].holdTimeSeconds"},
		{"keepalive over a third", []string{"spec", "peers"}, peer(map[string]any{"holdTimeSeconds": int64(9), "keepaliveTimeSeconds": int64(4)}), "spec.peers[0].keepaliveTimeSeconds"},
		{"restart time", []string{"spec", "peers"}, peer(map[string]any{"gracefulRestart": map[string]any{"restartTimeSeconds": int64(5000)}}), "spec.peers[0].gracefulRestart.restartTimeSeconds"},
		{"no peers", []string{"spec", "peers"}, []any{}, "spec.peers"},
		{"peer listed twice", []string{"spec", "peers"}, append(peer(nil), peer(nil)...), `.spec.peers: duplicate entries for key [address="192.0.2.1"]`},
	} {
		t.Run(c.name, func(t *testing.T) {
			broken := example.DeepCopy()
			if err := unstructured.SetNestedField(broken.Object, c.value, c.path...); err != nil {
				t.Fatal(err)
			}
			err := a.apply(t, broken, true)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("apiserver: %v; want a refusal naming %s", err, c.want)
			}
			if _, err := bgp.ParsePolicy(broken); err == nil {
				t.Errorf("ParsePolicy took what the apiserver refuses")
			}
		})
	}
}
