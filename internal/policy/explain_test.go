package policy_test

import (
	"testing"

	"github.com/fastpath-net/fastpath/internal/identity"
	"github.com/fastpath-net/fastpath/internal/policy"
	"github.com/fastpath-net/fastpath/internal/policy/policytest"
)

// TestExplain: a verdict event's fields become a sentence naming the
// enforcing policies and the peer's labels, or the allowing rule.
func TestExplain(t *testing.T) {
	eng, _, err := policytest.NewBase(identity.NewMemory(identity.MinCluster).Identity, `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: "x", name: allow-b}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{podSelector: {matchLabels: {pod: b}}}]
    ports: [{port: 80}]
`)
	must(t, err)
	eng.Changes()
	xa := policy.PodName{Namespace: "x", Name: "a"}
	yb, _, _ := eng.PodIdentity(policy.PodName{Namespace: "y", Name: "b"})
	xb, _, _ := eng.PodIdentity(policy.PodName{Namespace: "x", Name: "b"})
	for _, c := range []struct {
		peer identity.ID
		port uint16
		want string
	}{
		{yb, 80, "ingress of x/a: denied: enforced by x/allow-b, and no rule allows identity 260 (y:pod=b) on tcp/80"},
		{xb, 80, "ingress of x/a: allowed by x/allow-b spec.ingress[0]"},
		{identity.WorldIPv4, 80, "ingress of x/a: denied: enforced by x/allow-b, and no rule allows identity world-ipv4 on tcp/80"},
	} {
		if got := eng.Explain(xa, policy.Ingress, c.peer, policy.TCP, c.port); got != c.want {
			t.Errorf("got  %s\nwant %s", got, c.want)
		}
	}
}
