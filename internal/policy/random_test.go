package policy_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/fastpath-net/fastpath/internal/identity"
	"github.com/fastpath-net/fastpath/internal/policy/policytest"
)

// randomPolicies are the pool TestRandomChanges applies and deletes. They
// select by labels the changes move around; their ipBlocks cover whole
// namespaces, so no identity is ever split by a block (which would fail
// closed and differ from the oracle on purpose).
var randomPolicies = []string{`
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: "x", name: p0}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{podSelector: {matchLabels: {pod: b}}}]
    ports: [{port: 80}, {port: serve-81-udp, protocol: UDP}]
`, `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: "y", name: p1}
spec:
  podSelector: {}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: red}}, podSelector: {matchExpressions: [{key: pod, operator: In, values: [a, c]}]}}]
`, `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: "z", name: p2}
spec:
  podSelector: {matchLabels: {pod: c}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.2.0/24]}}]
    ports: [{port: 80, endPort: 81, protocol: TCP}, {protocol: SCTP}]
`, `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: "x", name: p3}
spec:
  podSelector: {matchExpressions: [{key: pod, operator: NotIn, values: [a]}]}
  policyTypes: [Ingress, Egress]
  ingress:
  - from: [{namespaceSelector: {}}]
    ports: [{port: 81, protocol: UDP}]
  egress:
  - to: [{namespaceSelector: {matchLabels: {ns: "y"}}}]
    ports: [{port: serve-80-tcp}]
`, `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: "y", name: p4}
spec:
  podSelector: {matchLabels: {pod: b}}
  ingress:
  - {}
`, `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: "z", name: p5}
spec:
  podSelector: {}
  ingress:
  - from: [{ipBlock: {cidr: 10.0.1.0/24}}, {podSelector: {matchLabels: {pod: d}}}]
`}

// TestRandomChanges applies a seeded random sequence of label changes,
// policy changes and pod deletions/re-creations to one incremental Engine,
// and after every step compares its whole reachability matrix with the
// oracle: whatever the order of events, incremental recomputation must
// land where a reading of the API from scratch does.
func TestRandomChanges(t *testing.T) {
	eng, w, err := policytest.NewBase(identity.NewMemory(identity.MinCluster).Identity, "")
	must(t, err)
	r := rand.New(rand.NewPCG(5, 11))
	pods := w.PodNames()
	deleted := map[string][]byte{}
	steps := 150
	if testing.Short() {
		steps = 30
	}
	for step := range steps {
		var what string
		switch op := r.IntN(10); {
		case op < 3:
			name := pods[r.IntN(len(pods))]
			p := w.Pods[name]
			if p == nil {
				continue
			}
			l := fmt.Sprint("pod: ", []string{"a", "b", "c", "d"}[r.IntN(4)])
			what = "relabel pod " + name + " " + l
			must(t, w.Apply(eng, []byte(podYAML(p.Namespace, p.Name, l, p.Status.PodIP))))
		case op < 5:
			ns := []string{"x", "y", "z"}[r.IntN(3)]
			l := fmt.Sprintf("{ns: %q, team: %s}", []string{"x", "y", "z"}[r.IntN(3)], []string{"red", "blue"}[r.IntN(2)])
			what = "relabel namespace " + ns + " " + l
			must(t, w.Apply(eng, []byte(fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata: {name: %q, labels: %s}\n", ns, l))))
		case op < 8:
			i := r.IntN(len(randomPolicies))
			what = fmt.Sprint("apply policy p", i)
			must(t, w.Apply(eng, []byte(randomPolicies[i])))
		case op < 9:
			i := r.IntN(len(randomPolicies))
			ns := []string{"x", "y", "z", "x", "y", "z"}[i]
			what = fmt.Sprintf("delete policy %s/p%d", ns, i)
			must(t, w.Delete(eng, []byte(fmt.Sprintf("networkpolicy %s/p%d", ns, i))))
		default:
			name := pods[r.IntN(len(pods))]
			if yaml, ok := deleted[name]; ok {
				what = "re-create pod " + name
				delete(deleted, name)
				must(t, w.Apply(eng, yaml))
			} else if p := w.Pods[name]; p != nil {
				what = "delete pod " + name
				deleted[name] = []byte(podYAML(p.Namespace, p.Name, fmt.Sprint("pod: ", p.Labels["pod"]), p.Status.PodIP))
				must(t, w.Delete(eng, []byte("pod "+name)))
			}
		}
		eng.Changes()
		before := t.Failed()
		checkMatrix(t, eng, w, step)
		if !before && t.Failed() {
			t.Fatalf("after step %d: %s", step, what)
		}
	}
}

// podYAML is a base pod (all e2e ports) with other labels.
func podYAML(ns, name, labels, ip string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {namespace: %q, name: %q, labels: {%s}}
spec:
  containers:
  - name: cont
    ports:
    - {name: serve-80-tcp, containerPort: 80, protocol: TCP}
    - {name: serve-80-udp, containerPort: 80, protocol: UDP}
    - {name: serve-81-udp, containerPort: 81, protocol: UDP}
status:
  podIP: %s
  podIPs: [{ip: %s}]
`, ns, name, labels, ip, ip)
}
