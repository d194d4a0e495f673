package policy_test

import (
	"net/netip"
	"testing"

	"github.com/fastpath-net/fastpath/internal/identity"
	"github.com/fastpath-net/fastpath/internal/policy"
	"github.com/fastpath-net/fastpath/internal/policy/policytest"
)

// TestUnknownIdentity: a pod whose identity cannot be resolved yet (its
// FastpathIdentity, allocated by another node, not seen) is in no selector
// and not in the ipcache, so nothing allows it; once IdentityKnown, the
// endpoints selecting it are recomputed and its address maps to it.
func TestUnknownIdentity(t *testing.T) {
	mem := identity.NewMemory(identity.MinCluster)
	var hidden string // label set the resolver pretends not to know
	eng, w, err := policytest.NewBase(func(l identity.Labels) identity.ID {
		if l.String() == hidden {
			return identity.Unknown
		}
		return mem.Identity(l)
	}, `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: "y", name: from-x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: "x"}}
      podSelector: {matchLabels: {role: new}}
`)
	must(t, err)
	eng.Changes()

	// x/c is relabelled to a label set only another node has allocated.
	p := w.Pods["x/c"].DeepCopy()
	p.Labels = map[string]string{"pod": "c", "role": "new"}
	hidden = identity.ForPod("x", w.NS["x"].Labels, p.Labels).String()
	eng.UpsertPod(p)
	cs := eng.Changes()
	xc := policy.PodName{Namespace: "x", Name: "c"}
	ya := policy.PodName{Namespace: "y", Name: "a"}
	if id, _, _ := eng.PodIdentity(xc); id != identity.Unknown {
		t.Fatalf("x/c identity %d, want unknown", id)
	}
	addr := netip.MustParsePrefix("10.0.1.3/32")
	if _, ok := eng.IPCache()[addr]; ok {
		t.Errorf("waiting pod's address in the ipcache: %v", cs.IPCache)
	}
	newLabels := identity.ForPod("x", w.NS["x"].Labels, p.Labels)
	if !eng.LabelsInUse(newLabels) {
		t.Error("a waiting pod's label set is not in use: the GC would delete its identity")
	}
	ep, _ := eng.Endpoint(ya)
	if len(ep.Entries) != 0 {
		t.Errorf("y/a allows %v before x/c's identity is known", ep.Entries)
	}

	hidden = ""
	before := eng.Stats.EndpointComputations
	eng.IdentityKnown(identity.ForPod("x", w.NS["x"].Labels, p.Labels))
	cs = eng.Changes()
	id, _, _ := eng.PodIdentity(xc)
	if id == identity.Unknown {
		t.Fatal("x/c still unknown")
	}
	if cs.IPCache.Upsert[addr] != id {
		t.Errorf("ipcache delta %v, want %s -> %d", cs.IPCache.Upsert, addr, id)
	}
	ep, _ = eng.Endpoint(ya)
	if _, ok := ep.Entries[policy.Key{Identity: id, Dir: policy.Ingress}]; !ok || len(ep.Entries) != 1 {
		t.Errorf("y/a entries %v, want x/c's identity %d", ep.Entries, id)
	}
	if n := eng.Stats.EndpointComputations - before; n != 2 {
		t.Errorf("%d computations, want 2 (x/c and y/a)", n)
	}
	if !eng.LabelsInUse(newLabels) {
		t.Error("x/c's label set not in use")
	}
	old := identity.ForPod("x", w.NS["x"].Labels, map[string]string{"pod": "c"})
	if eng.LabelsInUse(old) {
		t.Error("x/c's former label set still in use")
	}
}
