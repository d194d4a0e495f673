package k8s

import (
	"errors"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func annotated(s *discoveryv1.EndpointSlice, trigger string) *discoveryv1.EndpointSlice {
	s.Annotations = map[string]string{corev1.EndpointsLastChangeTriggerTime: trigger}
	return s
}

// TestTriggerTimes checks kube-proxy's rules for the programming-latency
// annotation: only changes after the start, only well-formed times, only
// with a batch that changes the Service, none for deletions.
func TestTriggerTimes(t *testing.T) {
	old := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339Nano)
	h := newHarness(t, service("a", "10.96.0.1", 0), annotated(slice("a-1", "a", 8080, "10.0.1.1"), old), node("192.168.1.10", ""))
	if u := h.next(); len(u.TriggerTimes) != 0 {
		t.Fatalf("full update carries %v; a trigger time older than the start must be ignored", u.TriggerTimes)
	}
	update := func(s *discoveryv1.EndpointSlice) {
		t.Helper()
		if _, err := h.client.DiscoveryV1().EndpointSlices(ns).Update(t.Context(), s, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	t1 := time.Now().UTC().Truncate(time.Microsecond)
	update(annotated(slice("a-1", "a", 8080, "10.0.1.1", "10.0.1.2"), t1.Format(time.RFC3339Nano)))
	if u := h.next(); !slices.EqualFunc(u.TriggerTimes, []time.Time{t1}, time.Time.Equal) {
		t.Fatalf("after a backend was added: trigger times %v, want [%v]", u.TriggerTimes, t1)
	}

	// A slice update that changes nothing programmed is not a programming
	// event; its time must not show up with the next real change.
	update(annotated(slice("a-1", "a", 8080, "10.0.1.1", "10.0.1.2"), time.Now().UTC().Format(time.RFC3339Nano)))
	update(annotated(slice("a-1", "a", 8080, "10.0.1.1", "10.0.1.2", "10.0.1.3"), "not a time"))
	if u := h.next(); len(u.TriggerTimes) != 0 {
		t.Fatalf("after a no-op update and a malformed annotation: trigger times %v, want none", u.TriggerTimes)
	}
	t3 := time.Now().UTC().Truncate(time.Microsecond)
	update(annotated(slice("a-1", "a", 8080, "10.0.1.1"), t3.Format(time.RFC3339Nano)))
	if u := h.next(); !slices.EqualFunc(u.TriggerTimes, []time.Time{t3}, time.Time.Equal) {
		t.Fatalf("after a backend was removed: trigger times %v, want [%v]", u.TriggerTimes, t3)
	}
	if err := h.client.DiscoveryV1().EndpointSlices(ns).Delete(t.Context(), "a-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if u := h.next(); len(u.TriggerTimes) != 0 {
		t.Fatalf("after the slice was deleted: trigger times %v, want none", u.TriggerTimes)
	}
}

func localLB(hcPort int32) *corev1.Service {
	svc := service("lb", "10.96.0.9", 30080)
	svc.Spec.Type = corev1.ServiceTypeLoadBalancer
	svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	svc.Spec.HealthCheckNodePort = hcPort
	return svc
}

// TestHealthCheckCounts checks kube-proxy's LocalReadyEndpoints: distinct
// addresses of ready endpoints on this node, and that a change of the
// health-check port alone is delivered.
func TestHealthCheckCounts(t *testing.T) {
	s1 := slice("lb-1", "lb", 8080, "10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.1.4")
	s1.Endpoints[0].NodeName = ptr.To(testNode)
	s1.Endpoints[1].NodeName = ptr.To(testNode)
	s1.Endpoints[2].NodeName = ptr.To(testNode) // not ready: does not count
	s1.Endpoints[2].Conditions = discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(true), Terminating: ptr.To(true)}
	s1.Endpoints[3].NodeName = ptr.To("other-node")
	s2 := slice("lb-2", "lb", 9090, "10.0.1.1") // the same pod with another port
	s2.Endpoints[0].NodeName = ptr.To(testNode)
	s2.Endpoints[0].Conditions = discoveryv1.EndpointConditions{} // unset: ready
	h := newHarness(t, localLB(32000), s1, s2, node("192.168.1.10", ""))
	u := h.next()
	if got, want := u.HealthChecks[name("lb")], (HealthCheck{NodePort: 32000, LocalEndpoints: 2}); got != want {
		t.Fatalf("health check %+v, want %+v", got, want)
	}
	if _, err := h.client.CoreV1().Services(ns).Update(t.Context(), localLB(32001), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	u = h.next()
	if got, want := u.HealthChecks[name("lb")], (HealthCheck{NodePort: 32001, LocalEndpoints: 2}); got != want {
		t.Fatalf("after the port changed: health check %+v, want %+v", got, want)
	}
	if !h.w.NodeEligible() {
		t.Fatal("NodeEligible is false with the Node present")
	}
}

// TestHealthCheckErrorEvent: kube-proxy's reason and message.
func TestHealthCheckErrorEvent(t *testing.T) {
	h := newHarness(t, localLB(32000), node("192.168.1.10", ""))
	h.next()
	h.w.ReportHealthCheckError(name("lb"), 32000, errors.New("listen tcp4 0.0.0.0:32000: bind: address already in use"))
	want := `Warning FailedToStartServiceHealthcheck node node-a failed to start healthcheck "demo/lb" on port 32000: listen tcp4 0.0.0.0:32000: bind: address already in use`
	if got := h.event(); got != want {
		t.Fatalf("event %q\nwant %q", got, want)
	}
}
