package lbipam_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/fastpath-net/fastpath/internal/lbipam"
)

// TestOnAPIServer runs the controller against a real apiserver.
func TestOnAPIServer(t *testing.T) {
	a := startAPI(t)
	t.Run("CRDValidation", func(t *testing.T) { testCRDValidation(t, a) })
	t.Run("AllocateAndRelease", func(t *testing.T) { testAllocateAndRelease(t, a) })
	t.Run("Selector", func(t *testing.T) { testSelector(t, a) })
	t.Run("RequestedIP", func(t *testing.T) { testRequestedIP(t, a) })
	t.Run("Sharing", func(t *testing.T) { testSharing(t, a) })
	t.Run("DisableAndDelete", func(t *testing.T) { testDisableAndDelete(t, a) })
	t.Run("Overlap", func(t *testing.T) { testOverlap(t, a) })
	t.Run("OtherController", func(t *testing.T) { testOtherController(t, a) })
	t.Run("Restart", func(t *testing.T) { testRestart(t, a) })
	t.Run("LeaderElection", func(t *testing.T) { testLeaderElection(t, a) })
}

// testCRDValidation: the apiserver refuses bad pools, naming the field.
func testCRDValidation(t *testing.T, a *api) {
	for i, c := range []struct{ spec, want string }{
		{`blocks: [{cidr: 10.200.0.0/24}, {start: 10.200.1.1, stop: 10.200.1.9}, {cidr: "2001:db8:200::/120"}]`, ""},
		{`blocks: [{start: "2001:db8:201::9", stop: "2001:db8:201::1"}]`, ""}, // order of IPv6: checked by the operator
		{`blocks: [{cidr: 10.200.0.0/33}]`, "spec.blocks[0].cidr: Invalid value"},
		{`blocks: [{cidr: 10.200.0.1/24}]`, "no host bits"},
		{`blocks: [{cidr: 127.0.0.0/8}]`, `spec.blocks[0].cidr: Invalid value: "127.0.0.0/8": must be unicast addresses a network can route`},
		{`blocks: [{cidr: 224.0.0.0/4}]`, "not loopback, link-local, multicast"},
		{`blocks: [{start: 169.254.0.1, stop: 169.254.0.9}]`, "spec.blocks[0].start: Invalid value"},
		{`blocks: [{start: 10.200.3.1, stop: "ff02::1"}]`, "spec.blocks[0].stop: Invalid value"},
		{`blocks: [{cidr: 10.200.0.0/24}, {start: 10.200.1.9, stop: 10.200.1.1}]`, "spec.blocks[1].stop: Invalid value: stop must not be lower than start"},
		{`blocks: [{start: 10.200.1.1, stop: "2001:db8::1"}]`, "spec.blocks[0].stop: Invalid value: stop must be of the same IP family"},
		{`blocks: [{start: 10.200.1.1, stop: 10.200.1.300}]`, "spec.blocks[0].stop: Invalid value"},
		{`blocks: [{start: 10.200.1.1}]`, "needs both start and stop"},
		{`blocks: [{cidr: 10.200.0.0/24, start: 10.200.0.1, stop: 10.200.0.2}]`, "either cidr or start and stop"},
		{`blocks: [{}]`, "either cidr or start and stop"},
		{`blocks: []`, "spec.blocks: Invalid value"},
		{`serviceSelector: {}`, "spec.blocks: Required value"},
		{`{blocks: [{cidr: 10.200.2.0/24}], serviceSelector: {matchExpressions: [{key: a, operator: In}]}}`, "values must be non-empty"},
		{`{blocks: [{cidr: 10.200.2.0/24}], serviceSelector: {matchExpressions: [{key: a, operator: Is}]}}`, "Unsupported value"},
	} {
		err := a.pool(t, fmt.Sprint("crd-", i), c.spec)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: refused: %v", c.spec, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: err = %v, want one with %q", c.spec, err, c.want)
		}
		if err == nil {
			// Accepted pools select every Service: not for the next subtests.
			if err := a.dyn.Resource(lbipam.PoolGVR).Delete(t.Context(), fmt.Sprint("crd-", i), metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// testAllocateAndRelease: ranges and CIDRs, exhaustion reported, release
// on deletion and on a type change, other classes untouched.
func testAllocateAndRelease(t *testing.T, a *api) {
	ns := a.namespace(t, "fp-lbipam-alloc")
	a.nsPool(t, "alloc", ns, "[{start: 10.10.0.1, stop: 10.10.0.2}, {cidr: 10.10.1.0/31}]")
	a.run(t)
	for _, n := range []string{"a", "b", "c", "d"} {
		a.svc(t, ns, n, []int32{80})
	}
	a.svc(t, ns, "ours", []int32{80}, func(s *corev1.Service) { s.Spec.LoadBalancerClass = ptr.To(lbipam.Class) })
	a.svc(t, ns, "other", []int32{80}, func(s *corev1.Service) { s.Spec.LoadBalancerClass = ptr.To("example.com/lb") })
	a.svc(t, ns, "cip", []int32{80}, func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeClusterIP })
	// Four addresses for five Services: which one waits depends on the
	// order the controller sees them; each address must be given once.
	got := map[string]string{}
	a.eventuallyFunc(t, func() bool {
		seen, exhausted := map[string]bool{}, 0
		for _, n := range []string{"a", "b", "c", "d", "ours"} {
			s := state(a.get(t, ns, n))
			got[n] = s
			if s == "-PoolExhausted" {
				exhausted++
			} else if strings.HasPrefix(s, "10.10.") {
				seen[s] = true
			}
		}
		return exhausted == 1 && len(seen) == 4
	}, func() string { return "got " + fmtMap(got) })
	for _, ip := range []string{"10.10.0.1", "10.10.0.2", "10.10.1.0", "10.10.1.1"} {
		if !containsValue(got, ip) {
			t.Fatalf("%s not given: %v", ip, got)
		}
	}
	loser := keyOf(got, "-PoolExhausted")
	a.event(t, ns, loser, "PoolExhausted", "held (alloc)")
	a.poolStatus(t, "alloc", 4, "Conflict", "False")
	a.eventually(t, ns, map[string]string{"other": "-", "cip": "-"})

	// Deleting a Service frees its address for the waiting one.
	victim := keyOf(got, "10.10.0.1")
	if err := a.cs.CoreV1().Services(ns).Delete(t.Context(), victim, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	a.eventually(t, ns, map[string]string{loser: "10.10.0.1"})
	a.event(t, ns, loser, lbipam.EventAllocated, "10.10.0.1 from pool alloc")

	// A Service that stops being a LoadBalancer gives its address back
	// and loses our condition; a new Service gets the address.
	mover := keyOf(got, "10.10.1.1")
	s := a.get(t, ns, mover)
	s.Spec.Type = corev1.ServiceTypeClusterIP
	if _, err := a.cs.CoreV1().Services(ns).Update(t.Context(), s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	a.eventually(t, ns, map[string]string{mover: "-"})
	a.svc(t, ns, "late", []int32{80})
	a.eventually(t, ns, map[string]string{"late": "10.10.1.1"})
	a.poolStatus(t, "alloc", 4, "Ready", "True")
}

// testSelector: a pool serves only the Services it selects.
func testSelector(t *testing.T, a *api) {
	ns := a.namespace(t, "fp-lbipam-sel")
	a.mustPool(t, "front", `{blocks: [{cidr: 10.11.0.0/30}], serviceSelector: {matchLabels: {tier: front}, matchExpressions: [{key: io.kubernetes.service.namespace, operator: In, values: [fp-lbipam-sel]}]}}`)
	a.run(t)
	a.svc(t, ns, "web", []int32{80}, func(s *corev1.Service) { s.Labels = map[string]string{"tier": "front"} })
	a.svc(t, ns, "db", []int32{5432}, func(s *corev1.Service) { s.Labels = map[string]string{"tier": "back"} })
	a.eventually(t, ns, map[string]string{"web": "10.11.0.0", "db": "-NoPool"})
	a.event(t, ns, "db", "NoPool", "selects this Service")
}

// testRequestedIP: the annotation and spec.loadBalancerIP are honoured;
// an address outside the pools or taken is refused with the cause.
func testRequestedIP(t *testing.T, a *api) {
	ns := a.namespace(t, "fp-lbipam-req")
	a.nsPool(t, "req", ns, "[{cidr: 10.12.0.0/28}]")
	a.run(t)
	a.svc(t, ns, "ann", []int32{80}, annotate(lbipam.RequestedIPAnnotation, "10.12.0.7"))
	a.svc(t, ns, "spec", []int32{80}, func(s *corev1.Service) { s.Spec.LoadBalancerIP = "10.12.0.9" })
	a.eventually(t, ns, map[string]string{"ann": "10.12.0.7", "spec": "10.12.0.9"})
	a.svc(t, ns, "outside", []int32{80}, annotate(lbipam.RequestedIPAnnotation, "192.0.2.10"))
	a.svc(t, ns, "taken", []int32{443}, annotate(lbipam.RequestedIPAnnotation, "10.12.0.7"))
	a.svc(t, ns, "disagree", []int32{80}, annotate(lbipam.RequestedIPAnnotation, "10.12.0.3"), func(s *corev1.Service) { s.Spec.LoadBalancerIP = "10.12.0.4" })
	a.svc(t, ns, "bad", []int32{80}, annotate(lbipam.RequestedIPAnnotation, "10.12.0.x"))
	a.eventually(t, ns, map[string]string{
		"outside": "-RequestedIPNotInPool", "taken": "-RequestedIPInUse", "disagree": "-InvalidRequest", "bad": "-InvalidRequest",
	})
	a.event(t, ns, "taken", "RequestedIPInUse", "10.12.0.7 is held by "+ns+"/ann")
	a.event(t, ns, "outside", "RequestedIPNotInPool", "192.0.2.10")
	if m := message(a.get(t, ns, "disagree")); !strings.Contains(m, "spec.loadBalancerIP") {
		t.Errorf("disagree: condition message %q does not name spec.loadBalancerIP", m)
	}
	if m := message(a.get(t, ns, "bad")); !strings.Contains(m, lbipam.RequestedIPAnnotation) {
		t.Errorf("bad: condition message %q does not name the annotation", m)
	}
	// The holder goes away: the waiting Service gets its address.
	if err := a.cs.CoreV1().Services(ns).Delete(t.Context(), "ann", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	a.eventually(t, ns, map[string]string{"taken": "10.12.0.7"})
}

// testSharing: Services with the same sharing key share an address when
// their ports differ, and not when a port is in both.
func testSharing(t *testing.T, a *api) {
	ns := a.namespace(t, "fp-lbipam-share")
	a.nsPool(t, "share", ns, "[{cidr: 10.13.0.0/30}]")
	a.run(t)
	key := annotate(lbipam.SharingKeyAnnotation, "edge")
	a.svc(t, ns, "http", []int32{80, 443}, key)
	a.eventually(t, ns, map[string]string{"http": "10.13.0.0"})
	a.svc(t, ns, "ssh", []int32{22}, key)
	a.svc(t, ns, "http2", []int32{443}, key)                                                // clashes: its own address
	a.svc(t, ns, "nokey", []int32{25}, annotate(lbipam.RequestedIPAnnotation, "10.13.0.0")) // no key: may not share
	a.svc(t, ns, "clash", []int32{22}, key, annotate(lbipam.RequestedIPAnnotation, "10.13.0.0"))
	a.eventually(t, ns, map[string]string{
		"ssh": "10.13.0.0", "http2": "10.13.0.1", "nokey": "-RequestedIPInUse", "clash": "-RequestedIPInUse",
	})
	a.event(t, ns, "clash", "RequestedIPInUse", "both use port 22/TCP")
	a.poolStatus(t, "share", 2, "Ready", "True") // a shared address counts once
}

// testDisableAndDelete: disabling a pool keeps its Services' addresses
// and gives no new one; deleting it takes its addresses back, and its
// Services move to a pool that remains.
func testDisableAndDelete(t *testing.T, a *api) {
	ns := a.namespace(t, "fp-lbipam-del")
	a.nsPool(t, "del-a", ns, "[{cidr: 10.14.0.0/30}]")
	a.run(t)
	a.svc(t, ns, "one", []int32{80})
	a.eventually(t, ns, map[string]string{"one": "10.14.0.0"})
	a.patchPool(t, "del-a", `{"spec":{"disabled":true}}`)
	a.svc(t, ns, "two", []int32{80})
	a.eventually(t, ns, map[string]string{"one": "10.14.0.0", "two": "-NoPool"})
	a.nsPool(t, "del-b", ns, "[{cidr: 10.14.1.0/30}]")
	a.eventually(t, ns, map[string]string{"one": "10.14.0.0", "two": "10.14.1.0"})
	if err := a.dyn.Resource(lbipam.PoolGVR).Delete(t.Context(), "del-a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	a.eventually(t, ns, map[string]string{"one": "10.14.1.1", "two": "10.14.1.0"})
	a.poolStatus(t, "del-b", 2, "Ready", "True")
}

// testOverlap: a pool overlapping an older one is reported, naming it,
// and gives no address; the older one keeps serving.
func testOverlap(t *testing.T, a *api) {
	ns := a.namespace(t, "fp-lbipam-ovl")
	a.nsPool(t, "ovl-old", ns, "[{cidr: 10.15.0.0/31}]")
	time.Sleep(1100 * time.Millisecond) // creationTimestamp has seconds; "older" must be clear
	a.nsPool(t, "ovl-new", ns, "[{start: 10.15.0.1, stop: 10.15.0.20}]")
	a.run(t)
	msg := a.poolStatus(t, "ovl-new", 0, "Conflict", "True")
	if !strings.Contains(msg, "ovl-old") {
		t.Errorf("Conflict message %q does not name ovl-old", msg)
	}
	a.poolStatus(t, "ovl-old", 0, "Conflict", "False")
	for _, n := range []string{"a", "b", "c"} {
		a.svc(t, ns, n, []int32{80})
	}
	a.eventuallyFunc(t, func() bool {
		n := 0
		for _, s := range []string{"a", "b", "c"} {
			if st := state(a.get(t, ns, s)); st == "-PoolExhausted" {
				n++
			}
		}
		return n == 1
	}, func() string { return "want one of a, b, c exhausted (ovl-new gives nothing)" })
	a.poolStatus(t, "ovl-old", 2, "Conflict", "False")

	// An IPv6 range in the wrong order passes CEL (no address ordering
	// there); the operator reports it on the pool, naming the field.
	a.mustPool(t, "v6-reversed", `blocks: [{start: "2001:db8:15::9", stop: "2001:db8:15::1"}]`)
	msg = a.poolStatus(t, "v6-reversed", 0, "Ready", "False")
	if !strings.Contains(msg, "spec.blocks[0].stop") {
		t.Errorf("Ready message %q does not name spec.blocks[0].stop", msg)
	}
}

// testOtherController: a Service of another class (MetalLB) keeps the
// address its controller wrote, which is never handed out by us and
// counts as used; when it goes, a waiting Service gets it.
func testOtherController(t *testing.T, a *api) {
	ns := a.namespace(t, "fp-lbipam-other")
	a.nsPool(t, "other", ns, "[{cidr: 10.18.0.0/31}]")
	a.run(t)
	a.svc(t, ns, "metallb", []int32{80}, func(s *corev1.Service) { s.Spec.LoadBalancerClass = ptr.To("metallb.io/metallb") })
	s := a.get(t, ns, "metallb")
	s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "10.18.0.0"}}
	if _, err := a.cs.CoreV1().Services(ns).UpdateStatus(t.Context(), s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// One informer delivers Service events in order: the controller sees
	// the other controller's address before these Services.
	a.svc(t, ns, "ours", []int32{80})
	a.eventually(t, ns, map[string]string{"ours": "10.18.0.1"})
	a.svc(t, ns, "ours2", []int32{80})
	a.eventually(t, ns, map[string]string{"ours2": "-PoolExhausted", "metallb": "10.18.0.0 (no condition)"})
	a.poolStatus(t, "other", 2, "Ready", "True")
	if err := a.cs.CoreV1().Services(ns).Delete(t.Context(), "metallb", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	a.eventually(t, ns, map[string]string{"ours2": "10.18.0.0"})
}
