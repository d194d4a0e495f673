package deploy

import (
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"github.com/fastpath-net/fastpath/internal/agenttest"
	"github.com/fastpath-net/fastpath/internal/bgp"
	"github.com/fastpath-net/fastpath/internal/testenv"
	"github.com/fastpath-net/fastpath/internal/testpriv"
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
	objs, err := readObjects(filepath.Join(deployDir, "bgp", "peeringpolicy.example.yaml"))
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

// TestSpeakerRunsUnderItsRBAC applies deploy/bgp's ServiceAccount and RBAC
// for real and runs the real fastpath-bgp with only a token of that
// ServiceAccount, its speaker listening in an fp- namespace: it must read
// the peering policy, this Node, the peer's password Secret and the
// Service source (the LoadBalancer IP becomes its one advertised prefix),
// and log no "forbidden". SelfSubjectAccessReviews check each rule and a
// sample of what it must not do (events, writes, Secrets elsewhere).
func TestSpeakerRunsUnderItsRBAC(t *testing.T) {
	testpriv.Require(t)
	env := testenv.StartForTest(t, testenv.Options{NoControllerManager: true})
	applyFiles(t, newApplier(t, env), "bgp/serviceaccount.yaml", "bgp/rbac.yaml")
	kubeconfig := serviceAccountKubeconfig(t, env, "fastpath-bgp")
	checkAccess(t, kubeconfig, speakerAccess)
	admin := env.Clientset
	dyn, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	testenv.InstallCRD(t, dyn, filepath.Join(deployDir, "crds", "fastpathbgppeeringpolicies.yaml"), bgp.PolicyGVR)

	id := make([]byte, 3)
	_, _ = rand.Read(id)
	ns := agenttest.NewNS(t, "fp-depbgp"+hex.EncodeToString(id))
	node := "fp-deploy-bgp-node"
	if _, err := admin.CoreV1().Nodes().Create(t.Context(), &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: node, Labels: map[string]string{"bgp": "on"}},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.0.2.10"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CoreV1().Secrets(saNamespace).Create(t.Context(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "bgp-tor", Namespace: saNamespace},
		Data:       map[string][]byte{"password": []byte("fp-deploy-md5")},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	objs, err := readObjects(filepath.Join(deployDir, "bgp", "peeringpolicy.example.yaml"))
	if err != nil || len(objs) != 1 {
		t.Fatalf("example: %v (%d objects)", err, len(objs))
	}
	policy := objs[0]
	peers, _, _ := unstructured.NestedSlice(policy.Object, "spec", "peers")
	peers[0].(map[string]any)["passwordSecretRef"] = map[string]any{"name": "bgp-tor", "key": "password"}
	if err := unstructured.SetNestedSlice(policy.Object, peers, "spec", "peers"); err != nil {
		t.Fatal(err)
	}
	if _, err := dyn.Resource(bgp.PolicyGVR).Create(t.Context(), policy, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	agenttest.CreateLBService(t, admin, netip.MustParseAddr("203.0.113.40"), 8080, node)

	log := runBinary(t, "fastpath-bgp", "--kubeconfig", kubeconfig, "--node-name", node, "--netns", ns.Path(),
		"--bgp-listen-port", "1179", "--log-level", "debug")
	waitFor(t, log, "the peer added with its password and the LoadBalancer IP advertised", func() bool {
		return logHas(log, `msg="bgp: peer added"`, "peer=192.0.2.1") && logHas(log, `msg="bgp: prefixes changed"`, "advertised=1", "total=1")
	})
	if strings.Contains(strings.ToLower(log.String()), "forbidden") {
		t.Errorf("fastpath-bgp was refused something under its RBAC:\n%s", log)
	}
}

// logHas reports whether a line of log holds every one of parts.
func logHas(log agentLog, parts ...string) bool {
	for _, line := range strings.Split(log.String(), "\n") {
		n := 0
		for _, p := range parts {
			if strings.Contains(line, p) {
				n++
			}
		}
		if n == len(parts) {
			return true
		}
	}
	return false
}

// speakerAccess: every call fastpath-bgp makes, and a sample of what it
// never does.
var speakerAccess = []access{
	{ra{Resource: "services", Verb: "list"}, true},
	{ra{Resource: "services", Verb: "watch"}, true},
	{ra{Group: "discovery.k8s.io", Resource: "endpointslices", Verb: "list"}, true},
	{ra{Group: "discovery.k8s.io", Resource: "endpointslices", Verb: "watch"}, true},
	{ra{Resource: "nodes", Verb: "list"}, true},
	{ra{Resource: "nodes", Verb: "watch"}, true},
	{ra{Group: "fastpath.io", Resource: "fastpathbgppeeringpolicies", Verb: "list"}, true},
	{ra{Group: "fastpath.io", Resource: "fastpathbgppeeringpolicies", Verb: "watch"}, true},
	{ra{Resource: "secrets", Verb: "get", Namespace: saNamespace}, true},
	{ra{Group: "fastpath.io", Resource: "fastpathbgppeeringpolicies", Verb: "update"}, false},
	{ra{Resource: "secrets", Verb: "list", Namespace: saNamespace}, false},
	{ra{Resource: "secrets", Verb: "watch", Namespace: saNamespace}, false},
	{ra{Resource: "secrets", Verb: "get", Namespace: appNS}, false},
	{ra{Resource: "events", Verb: "create", Namespace: appNS}, false},
	{ra{Resource: "services", Verb: "get", Namespace: appNS}, false},
	{ra{Resource: "services", Subresource: "status", Verb: "patch", Namespace: appNS}, false},
	{ra{Resource: "nodes", Verb: "patch"}, false},
	{ra{Resource: "pods", Verb: "list"}, false},
	{ra{Group: "coordination.k8s.io", Resource: "leases", Verb: "get", Namespace: saNamespace}, false},
	{ra{Group: "fastpath.io", Resource: "fastpathidentities", Verb: "list"}, false},
}
