package policy_test

import (
	"fmt"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fastpath-net/fastpath/internal/identity"
	"github.com/fastpath-net/fastpath/internal/policy"
	"github.com/fastpath-net/fastpath/internal/policy/policytest"
)

const incrementalPolicies = `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: "y", name: from-x-a}
spec:
  podSelector: {}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: "x"}}
      podSelector: {matchLabels: {pod: a}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: "z", name: from-own-q}
spec:
  podSelector: {}
  ingress:
  - from:
    - podSelector: {matchLabels: {pod: q}}
`

// TestIncremental proves with the Engine's counters that a pod's label
// change recomputes the pod and the endpoints whose selectors gain or lose
// an identity, and nothing else, however many other pods exist.
func TestIncremental(t *testing.T) {
	eng, w, err := policytest.NewBase(identity.NewMemory(identity.MinCluster).Identity, incrementalPolicies)
	must(t, err)
	// 300 bystanders with labels of their own.
	for i := range 300 {
		p := pod("w", fmt.Sprint("p", i), map[string]string{"app": fmt.Sprint("app", i)}, fmt.Sprintf("10.1.%d.%d", i/250, i%250+1))
		w.Pods["w/"+p.Name] = p
		eng.UpsertPod(p)
	}
	eng.Changes()

	relabel := func(ns, name string, l map[string]string) (policy.ChangeSet, policy.Stats) {
		t.Helper()
		before := eng.Stats
		p := w.Pods[ns+"/"+name].DeepCopy()
		p.Labels = l
		w.Pods[ns+"/"+name] = p
		eng.UpsertPod(p)
		cs := eng.Changes()
		after := eng.Stats
		return cs, policy.Stats{
			EndpointComputations: after.EndpointComputations - before.EndpointComputations,
			SelectorMatches:      after.SelectorMatches - before.SelectorMatches,
		}
	}

	// 1. x/c gets a new label set no selector matches: one new identity
	// matched against the 2 selectors, only x/c recomputed.
	cs, st := relabel("x", "c", map[string]string{"pod": "c", "extra": "1"})
	if st.EndpointComputations != 1 || st.SelectorMatches != 2 {
		t.Errorf("new unselected identity: %+v, want 1 computation and 2 selector matches", st)
	}
	idC, _, _ := eng.PodIdentity(policy.PodName{Namespace: "x", Name: "c"})
	if want := map[netip.Prefix]identity.ID{netip.MustParsePrefix("10.0.1.3/32"): idC}; fmt.Sprint(cs.IPCache.Upsert) != fmt.Sprint(want) || len(cs.IPCache.Delete) != 0 {
		t.Errorf("ipcache delta %+v, want only %v", cs.IPCache, want)
	}

	// 2. x/c takes x/a's label set: an existing identity, no selector
	// changes, only x/c recomputed.
	_, st = relabel("x", "c", map[string]string{"pod": "a"})
	if st.EndpointComputations != 1 || st.SelectorMatches != 0 {
		t.Errorf("existing identity: %+v, want 1 computation, 0 selector matches", st)
	}

	// 3. x/b gets a new label set that y's selector matches: x/b and the
	// three endpoints of y (which use that selector) are recomputed, and
	// their entries now allow the new identity.
	cs, st = relabel("x", "b", map[string]string{"pod": "a", "extra": "2"})
	if st.EndpointComputations != 4 {
		t.Errorf("new selected identity: %d computations, want 4 (x/b, y/a, y/b, y/c)", st.EndpointComputations)
	}
	idB, _, _ := eng.PodIdentity(policy.PodName{Namespace: "x", Name: "b"})
	var changed []string
	for _, ep := range cs.Upserted {
		changed = append(changed, ep.Pod.String())
		if ep.Pod.Namespace == "y" {
			if _, ok := ep.Entries[policy.Key{Identity: idB, Dir: policy.Ingress}]; !ok {
				t.Errorf("%s does not allow the new identity %d: %v", ep.Pod, idB, ep.Entries)
			}
		}
	}
	if fmt.Sprint(changed) != "[x/b y/a y/b y/c]" {
		t.Errorf("changed endpoints %v, want [x/b y/a y/b y/c] (x/b: its identity)", changed)
	}

	// 4. A bystander's change costs one computation among 309 endpoints.
	_, st = relabel("w", "p7", map[string]string{"app": "other"})
	if st.EndpointComputations != 1 {
		t.Errorf("bystander: %d computations, want 1", st.EndpointComputations)
	}

	// 5. A namespace label change re-identifies its 3 pods; y's selector
	// loses x's identities, so y's endpoints follow: 3 + 3.
	before := eng.Stats.EndpointComputations
	ns := w.NS["x"].DeepCopy()
	ns.Labels["ns"] = "x2"
	eng.UpsertNamespace(ns)
	eng.Changes()
	if n := eng.Stats.EndpointComputations - before; n != 6 {
		t.Errorf("namespace relabel: %d computations, want 6", n)
	}
}

func pod(ns, name string, l map[string]string, ip string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: l},
		Status:     corev1.PodStatus{PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}},
	}
}
