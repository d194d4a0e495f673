package policy_test

import (
	"fmt"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fastpath-net/fastpath/internal/identity"
	"github.com/fastpath-net/fastpath/internal/policy"
	"github.com/fastpath-net/fastpath/internal/policy/policytest"
)

const blockPolicy = `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: "y", name: to-block}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 10.9.0.0/24}}]
`

// TestIncrementalIPBlock: a pod's new identity recomputes an endpoint with
// an ipBlock only when the identities involved have an address in the
// block, including the case where the pod leaves an identity that had
// addresses on both sides (which the block may now allow whole).
func TestIncrementalIPBlock(t *testing.T) {
	eng, w, err := policytest.NewBase(identity.NewMemory(identity.MinCluster).Identity, blockPolicy)
	must(t, err)
	add := func(name, app, ip string) {
		p := pod("w", name, map[string]string{"app": app}, ip)
		w.Pods["w/"+name] = p
		eng.UpsertPod(p)
	}
	add("in1", "in", "10.9.0.1")
	add("in2", "in", "10.9.0.2")
	add("m1", "m", "10.9.0.3") // identity m: one address inside,
	add("m2", "m", "10.7.0.1") // one outside
	for i := range 300 {
		add(fmt.Sprint("p", i), fmt.Sprint("app", i), fmt.Sprintf("10.1.%d.%d", i/250, i%250+1))
	}
	eng.Changes()
	ya := policy.PodName{Namespace: "y", Name: "a"}
	allows := func(pod string) bool {
		t.Helper()
		id, _, ok := eng.PodIdentity(policy.PodName{Namespace: "w", Name: pod})
		if !ok {
			t.Fatalf("no pod w/%s", pod)
		}
		ep, _ := eng.Endpoint(ya)
		_, ok = ep.Entries[policy.Key{Identity: id, Dir: policy.Egress, Proto: policy.AnyProto}]
		return ok
	}
	relabel := func(name, app string) int {
		t.Helper()
		p := w.Pods["w/"+name].DeepCopy()
		p.Labels = map[string]string{"app": app}
		w.Pods["w/"+name] = p
		before := eng.Stats.EndpointComputations
		eng.UpsertPod(p)
		eng.Changes()
		return eng.Stats.EndpointComputations - before
	}
	if !allows("in1") || allows("m1") || allows("p0") {
		t.Fatalf("y/a allows in %v, m %v, p0 %v; want only in", allows("in1"), allows("m1"), allows("p0"))
	}
	// A bystander outside the block: itself only.
	if n := relabel("p7", "other"); n != 1 {
		t.Errorf("bystander outside the block: %d computations, want 1", n)
	}
	// m2 (outside) leaves identity m, whose addresses are now all inside.
	if n := relabel("m2", "elsewhere"); n != 2 {
		t.Errorf("m2 leaving a mixed identity: %d computations, want 2 (w/m2, y/a)", n)
	}
	if !allows("m1") {
		t.Error("identity m lies wholly inside the block now; y/a does not allow it")
	}
	// in1 (inside) takes a new identity: y/a follows.
	if n := relabel("in1", "in-new"); n != 2 {
		t.Errorf("a pod inside the block re-identified: %d computations, want 2 (w/in1, y/a)", n)
	}
	if !allows("in1") {
		t.Error("in1's new identity lies inside the block; y/a does not allow it")
	}
}

// withIPBlocks adds to scale's cluster 100 policies with an ipBlock peer
// (egress to a /24 with an except), one app of one namespace each.
func withIPBlocks(eng *policy.Engine) {
	for j := range 100 {
		eng.UpsertPolicy(&networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprint("fp-ns", j%20), Name: fmt.Sprint("block", j)},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprint("app", j%50)}},
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
				Egress: []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{
					CIDR: fmt.Sprintf("172.16.%d.0/24", j), Except: []string{fmt.Sprintf("172.16.%d.128/25", j)},
				}}}}},
			},
		})
	}
}

// BenchmarkLabelChangeIPBlocks is BenchmarkLabelChange with ipBlock
// policies in the cluster: a pod's new identity concerns only the
// endpoints whose blocks hold its address.
func BenchmarkLabelChangeIPBlocks(b *testing.B) {
	benchLabelChange(b, func(eng *policy.Engine) { scale(eng); withIPBlocks(eng) })
}
