package l7policy_test

import (
	"net/netip"
	"os"
	"testing"

	"github.com/fastpath-net/fastpath/internal/identity"
	"github.com/fastpath-net/fastpath/internal/l7"
	"github.com/fastpath-net/fastpath/internal/l7policy"
	"github.com/fastpath-net/fastpath/internal/l7proxy"
	"github.com/fastpath-net/fastpath/internal/policy"
	"github.com/fastpath-net/fastpath/internal/policy/policytest"
)

const policies = `
apiVersion: fastpath.io/v1alpha1
kind: FastpathNetworkPolicy
metadata: {namespace: "x", name: web}
spec:
  endpointSelector: {matchLabels: {pod: a}}
  ingress:
  - fromEndpoints: [{}]
    toPorts:
    - ports: [{port: 80}]
      rules:
        http:
        - {method: GET, path: "/public(/.*)?"}
        - {headers: [{name: X-Token, value: s3cret}]}
        httpDeny:
        - {path: "/admin.*"}
  - fromEndpoints: [{matchLabels: {io.kubernetes.pod.namespace: "y"}}]
    toPorts: [{ports: [{port: 81}]}]
---
apiVersion: fastpath.io/v1alpha1
kind: FastpathNetworkPolicy
metadata: {namespace: "x", name: client}
spec:
  endpointSelector: {matchLabels: {pod: b}}
  egress:
  - toEndpoints: [{matchLabels: {pod: a}}]
    toPorts:
    - ports: [{port: 80}]
      rules: {http: [{method: GET}]}
`

// TestLookup: per flow, the rule sets of both ends as the Engine computed
// them, all or nothing where an end has no HTTP rules, and updates seen by
// the next lookup.
func TestLookup(t *testing.T) {
	eng, w, tbl, apply := setup(t)
	addr := func(pod string, port uint16) netip.AddrPort {
		_, addrs, ok := eng.PodIdentity(mustPod(pod))
		if !ok {
			t.Fatalf("no pod %s", pod)
		}
		return netip.AddrPortFrom(addrs[0], port)
	}
	type req struct {
		method, path string
		hdr          map[string][]string
	}
	check := func(from, to string, port uint16, r req, want ...bool) {
		t.Helper()
		got := tbl.Lookup(l7proxy.Flow{Src: addr(from, 40000), Dst: addr(to, port)})
		if len(got) != len(want) {
			t.Fatalf("%s -> %s:%d: %d rule sets, want %d", from, to, port, len(got), len(want))
		}
		for i, a := range got {
			v := a.Rules.Decide(&l7.Request{Method: r.method, Path: r.path, Host: "svc", Header: r.hdr})
			if v.Allowed != want[i] {
				t.Errorf("%s -> %s:%d %s %s (%s %s): %+v, want allowed=%v", from, to, port, r.method, r.path, a.Direction, a.Endpoint, v, want[i])
			}
		}
	}
	get := func(p string) req { return req{"GET", p, nil} }
	check("x/c", "x/a", 80, get("/public"), true)
	check("x/c", "x/a", 80, req{"POST", "/public", nil}, false)
	check("x/c", "x/a", 80, req{"POST", "/x", map[string][]string{"X-Token": {"s3cret"}}}, true)
	check("x/c", "x/a", 80, req{"GET", "/admin/users", map[string][]string{"X-Token": {"s3cret"}}}, false)
	// y/c: allowed at L4 on 81 only; a flow to 80 (not L4-allowed) gets nothing.
	check("y/c", "x/a", 81, get("/anything"), true)
	check("y/c", "x/a", 80, get("/public"), false)
	// x/b's egress (GET only) and x/a's ingress both apply.
	check("x/b", "x/a", 80, get("/public"), true, true)
	check("x/b", "x/a", 80, req{"POST", "/x", map[string][]string{"X-Token": {"s3cret"}}}, false, true)
	// Nobody enforces anything between y pods: one allow-all set.
	check("y/a", "y/b", 80, req{"DELETE", "/", nil}, true)

	// A flow to a Service frontend is judged for the backend the load
	// balancer chose.
	vip := netip.MustParseAddrPort("10.96.0.10:80")
	tbl.Backend = func(f l7proxy.Flow) (netip.AddrPort, bool) {
		if f.Dst == vip {
			return addr("x/a", 80), true
		}
		return netip.AddrPort{}, false
	}
	for _, c := range []struct {
		from, method, path string
		want               []bool
	}{{"x/c", "GET", "/admin", []bool{false}}, {"x/c", "GET", "/public", []bool{true}}, {"x/b", "POST", "/x", []bool{false, true}}} {
		got := tbl.Lookup(l7proxy.Flow{Src: addr(c.from, 40000), Dst: vip})
		if len(got) != len(c.want) {
			t.Fatalf("%s -> VIP: %d rule sets, want %d", c.from, len(got), len(c.want))
		}
		for i, a := range got {
			r := &l7.Request{Method: c.method, Path: c.path, Header: map[string][]string{"X-Token": {"s3cret"}}}
			if v := a.Rules.Decide(r); v.Allowed != c.want[i] {
				t.Errorf("%s -> VIP %s %s (%s %s): %+v, want %v", c.from, c.method, c.path, a.Direction, a.Endpoint, v, c.want[i])
			}
		}
	}
	tbl.Backend = nil

	// An update reaches the next lookup: the deny goes.
	must(t, w.Apply(eng, []byte(`
apiVersion: fastpath.io/v1alpha1
kind: FastpathNetworkPolicy
metadata: {namespace: "x", name: web}
spec:
  endpointSelector: {matchLabels: {pod: a}}
  ingress:
  - toPorts: [{ports: [{port: 80}], rules: {http: [{path: "/admin.*"}]}}]
`)))
	apply()
	check("x/c", "x/a", 80, get("/admin/users"), true)
	check("x/c", "x/a", 80, get("/public"), false)
}

// setup applies base.yaml and policies to an Engine and a Table; apply
// hands the Engine's next changes to the Table (done once already).
func setup(t *testing.T) (*policy.Engine, *policytest.World, *l7policy.Table, func()) {
	t.Helper()
	eng := policy.NewEngine(identity.NewMemory(identity.MinCluster).Identity, "")
	w := policytest.NewWorld()
	base, err := os.ReadFile("../policy/testdata/base.yaml")
	if err != nil {
		t.Fatal(err)
	}
	must(t, w.Apply(eng, base))
	must(t, w.Apply(eng, []byte(policies)))
	tbl := l7policy.New()
	tbl.OnError = func(pod policy.PodName, k policy.Key, err error) { t.Errorf("%s %v: %v", pod, k, err) }
	apply := func() {
		tbl.Apply(eng.Changes(), func(n policy.PodName) []netip.Addr {
			_, addrs, _ := eng.PodIdentity(n)
			return addrs
		})
	}
	apply()
	return eng, w, tbl, apply
}

func mustPod(s string) policy.PodName {
	n, err := policy.ParsePodName(s)
	if err != nil {
		panic(err)
	}
	return n
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestFlowEvent: an access-log record becomes an l7 monitor event naming
// the pods.
func TestFlowEvent(t *testing.T) {
	eng, _, tbl, _ := setup(t)
	_, a, _ := eng.PodIdentity(mustPod("x/a"))
	_, c, _ := eng.PodIdentity(mustPod("x/c"))
	ev := tbl.FlowEvent("node-1", l7proxy.Event{
		Flow:      l7proxy.Flow{Src: netip.AddrPortFrom(c[0], 40000), Dst: netip.AddrPortFrom(a[0], 80)},
		Direction: l7proxy.Ingress, Endpoint: "x/a", Method: "POST", Host: "svc", Path: "/admin",
		Verdict: l7.Verdict{Rule: "fnp:x/web spec.ingress[0].toPorts[0].rules.httpDeny[0]", Reason: l7.ReasonDenied},
		Status:  403, Proto: l7proxy.ProtoHTTP1,
	})
	if ev.Type != "l7" || ev.Verdict != "denied" || ev.Source.Pod != "c" || ev.Destination.Namespace != "x" || ev.Destination.Pod != "a" ||
		ev.L7.Status != 403 || ev.L7.Rule != "fnp:x/web spec.ingress[0].toPorts[0].rules.httpDeny[0]" || ev.Direction != "ingress" {
		t.Errorf("event %+v (l7 %+v)", ev, ev.L7)
	}
	want := "l7 denied: POST svc/admin by x/a ingress (fnp:x/web spec.ingress[0].toPorts[0].rules.httpDeny[0]) -> 403"
	if ev.Summary != want {
		t.Errorf("summary %q, want %q", ev.Summary, want)
	}
}
