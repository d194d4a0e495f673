package fpnetpol_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/fastpath-net/fastpath/internal/fpnetpol"
	"github.com/fastpath-net/fastpath/internal/testenv"
)

func crdPath(name string) string { return filepath.Join("..", "..", "deploy", "crds", name) }

// TestCRDValidation: a real apiserver accepts good policies of both kinds
// (and they decode to what was written) and refuses bad ones naming the
// field.
func TestCRDValidation(t *testing.T) {
	env := testenv.StartForTest(t, testenv.Options{NoControllerManager: true})
	dyn, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	testenv.InstallCRD(t, dyn, crdPath("fastpathnetworkpolicies.yaml"), fpnetpol.PolicyGVR)
	testenv.InstallCRD(t, dyn, crdPath("fastpathclusterwidenetworkpolicies.yaml"), fpnetpol.ClusterwidePolicyGVR)
	const ns = "fp-fpnetpol-crd"
	if _, err := env.Clientset.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	good := `
endpointSelector: {matchLabels: {app: server}}
ingress:
- fromEndpoints: [{matchLabels: {app: client, io.kubernetes.pod.namespace: other}}]
  fromCIDR: [10.0.0.0/8]
  toPorts:
  - ports: [{port: 80}]
    rules:
      http:
      - {method: GET, path: "/public(/.*)?"}
      - {method: "GET|POST", path: "/api/.*", host: "api\\.example(:80)?", headers: [{name: X-Token, value: secret}, {name: X-Trace}, {name: X-Id, regex: "[0-9]+"}]}
      httpDeny:
      - {path: "/admin.*"}
egress:
- toEndpoints: [{}]
  toPorts: [{ports: [{port: 53, protocol: UDP}, {port: 8000, endPort: 8100}]}]
- toPorts: [{ports: [{port: 443}], rules: {httpDeny: [{method: DELETE}]}}]
`
	for i, c := range []struct{ spec, want string }{
		{good, ""},
		{`{endpointSelector: {}, ingress: []}`, ""},
		{`{endpointSelector: {}}`, "a policy needs ingress or egress rules"},
		{`{ingress: []}`, "spec.endpointSelector: Required value"},
		{`{endpointSelector: {}, ingress: [{fromCIDR: [10.0.0.1/8]}]}`, "spec.ingress[0].fromCIDR[0]: Invalid value"},
		{`{endpointSelector: {}, egress: [{toCIDR: [nonsense]}]}`, "must be a CIDR"},
		{`{endpointSelector: {}, ingress: [{toPorts: [{ports: [{port: 0}]}]}]}`, "spec.ingress[0].toPorts[0].ports[0].port: Invalid value"},
		{`{endpointSelector: {}, ingress: [{toPorts: [{ports: [{port: 90, endPort: 80}]}]}]}`, "spec.ingress[0].toPorts[0].ports[0].endPort: Invalid value"},
		{`{endpointSelector: {}, ingress: [{toPorts: [{ports: [{port: 80, protocol: ICMP}]}]}]}`, "Unsupported value"},
		{`{endpointSelector: {}, ingress: [{toPorts: [{ports: []}]}]}`, "spec.ingress[0].toPorts[0].ports: Invalid value"},
		{`{endpointSelector: {}, ingress: [{toPorts: [{ports: [{port: 53, protocol: UDP}], rules: {http: [{method: GET}]}}]}]}`, "HTTP rules apply to single TCP ports"},
		{`{endpointSelector: {}, ingress: [{toPorts: [{ports: [{port: 80, endPort: 81}], rules: {http: [{method: GET}]}}]}]}`, "HTTP rules apply to single TCP ports"},
		{`{endpointSelector: {}, ingress: [{toPorts: [{ports: [{port: 80}], rules: {}}]}]}`, "rules needs http or httpDeny"},
		{`{endpointSelector: {}, ingress: [{toPorts: [{ports: [{port: 80}], rules: {http: [{path: "/a(b"}]}}]}]}`, "spec.ingress[0].toPorts[0].rules.http[0].path: Invalid value: \"string\": error parsing regexp: missing closing ): `/a(b` evaluating rule: must be a valid RE2 regular expression"},
		{`{endpointSelector: {}, egress: [{toPorts: [{ports: [{port: 80}], rules: {httpDeny: [{host: "*.example"}]}}]}]}`, "spec.egress[0].toPorts[0].rules.httpDeny[0].host"},
		{`{endpointSelector: {}, ingress: [{toPorts: [{ports: [{port: 80}], rules: {http: [{headers: [{name: X-A, regex: "[z-a]"}]}]}}]}]}`, ""}, // the agent refuses it (CEL budget)
		{`{endpointSelector: {}, ingress: [{toPorts: [{ports: [{port: 80}], rules: {http: [{headers: [{name: "bad header"}]}]}}]}]}`, "spec.ingress[0].toPorts[0].rules.http[0].headers[0].name: Invalid value"},
		{`{endpointSelector: {}, ingress: [{toPorts: [{ports: [{port: 80}], rules: {http: [{headers: [{name: X-A, value: a, regex: a}]}]}}]}]}`, "value or regex, not both"},
		{`{endpointSelector: {}, ingress: [{toPorts: [{ports: [{port: 80}], rules: {http: [{method: ""}]}}]}]}`, "spec.ingress[0].toPorts[0].rules.http[0].method"},
		{`{endpointSelector: {matchExpressions: [{key: a, operator: In}]}, ingress: []}`, "values must be non-empty"},
		{`{endpointSelector: {}, ingress: [{fromEndpoints: [{matchExpressions: [{key: a, operator: Is}]}]}]}`, "Unsupported value"},
	} {
		for _, cw := range []bool{false, true} {
			name := fmt.Sprint("crd-", i)
			err := create(t, dyn, cw, ns, name, c.spec)
			switch {
			case c.want == "" && err != nil:
				t.Errorf("clusterwide=%v %s: refused: %v", cw, c.spec, err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Errorf("clusterwide=%v %s: err = %v, want one with %q", cw, c.spec, err, c.want)
			}
		}
	}
	// The good policy reads back as written.
	u, err := dyn.Resource(fpnetpol.PolicyGVR).Namespace(ns).Get(t.Context(), "crd-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := fpnetpol.Decode(u)
	if err != nil {
		t.Fatal(err)
	}
	r := p.Spec.Ingress[0].ToPorts[0].Rules
	if p.Key() != "fnp:"+ns+"/crd-0" || len(r.HTTP) != 2 || *r.HTTP[1].Headers[0].Value != "secret" || r.HTTPDeny[0].Path != "/admin.*" ||
		p.Spec.Egress[0].ToPorts[0].Ports[1].EndPort != 8100 || p.Spec.Ingress[0].FromEndpoints[0].MatchLabels[fpnetpol.NamespaceLabel] != "other" {
		t.Errorf("decoded %+v", p.Spec)
	}
}

func create(t *testing.T, dyn dynamic.Interface, clusterwide bool, ns, name, spec string) error {
	t.Helper()
	var s map[string]any
	if err := yaml.Unmarshal([]byte(spec), &s); err != nil {
		t.Fatal(err)
	}
	kind, gvr := "FastpathNetworkPolicy", fpnetpol.PolicyGVR
	md := map[string]any{"name": name, "namespace": ns}
	if clusterwide {
		kind, gvr = "FastpathClusterwideNetworkPolicy", fpnetpol.ClusterwidePolicyGVR
		delete(md, "namespace")
	}
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "fastpath.io/v1alpha1", "kind": kind, "metadata": md, "spec": s}}
	var err error
	if clusterwide {
		_, err = dyn.Resource(gvr).Create(t.Context(), u, metav1.CreateOptions{})
	} else {
		_, err = dyn.Resource(gvr).Namespace(ns).Create(t.Context(), u, metav1.CreateOptions{})
	}
	return err
}

// TestSchemasEqual: the two kinds share one spec; the clusterwide file is
// a copy that must not drift.
func TestSchemasEqual(t *testing.T) {
	read := func(name string) any {
		raw, err := os.ReadFile(crdPath(name))
		if err != nil {
			t.Fatal(err)
		}
		var obj map[string]any
		if err := yaml.Unmarshal(raw, &obj); err != nil {
			t.Fatal(err)
		}
		return obj["spec"].(map[string]any)["versions"]
	}
	a, b := read("fastpathnetworkpolicies.yaml"), read("fastpathclusterwidenetworkpolicies.yaml")
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Errorf("schemas differ:\n%v\n%v", a, b)
	}
}
