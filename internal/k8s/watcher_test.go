package k8s

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"

	"github.com/fastpath-net/fastpath/internal/loadbalancer"
)

// These tests use client-go's fake clientset: the informer machinery is
// real, the apiserver is not. watcher_integration_test.go runs against a
// real one.

const (
	testNode = "node-a"
	ns       = "demo"
)

// harness runs a Watcher and collects its updates.
type harness struct {
	t       *testing.T
	client  kubernetes.Interface
	w       *Watcher
	events  *record.FakeRecorder
	updates chan Update
	block   chan struct{} // when not nil, the handler waits on it

	mu    sync.Mutex
	count map[loadbalancer.ServiceName]int // translations per Service
}

func newHarness(t *testing.T, objs ...runtime.Object) *harness {
	t.Helper()
	h := &harness{t: t, client: fake.NewClientset(objs...), events: record.NewFakeRecorder(100),
		updates: make(chan Update, 100), count: map[loadbalancer.ServiceName]int{}}
	w, err := New(Config{Client: h.client, NodeName: testNode, Recorder: h.events, Log: quietLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	w.translated = func(n loadbalancer.ServiceName) {
		h.mu.Lock()
		h.count[n]++
		h.mu.Unlock()
	}
	h.w = w
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, h.handle) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v", err)
		}
	})
	return h
}

func (h *harness) handle(u Update) {
	if h.block != nil {
		<-h.block
	}
	h.updates <- u
}

// next returns the next update, failing after 10 seconds.
func (h *harness) next() Update {
	h.t.Helper()
	select {
	case u := <-h.updates:
		return u
	case <-time.After(10 * time.Second):
		h.t.Fatal("no update within 10s")
	}
	return Update{}
}

// translations returns and resets the per-Service translation counts.
func (h *harness) translations() map[loadbalancer.ServiceName]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.count
	h.count = map[loadbalancer.ServiceName]int{}
	return c
}

func quietLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func name(n string) loadbalancer.ServiceName { return loadbalancer.ServiceName{Namespace: ns, Name: n} }

func service(n, ip string, nodePort int32) *corev1.Service {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: n, Namespace: ns},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeClusterIP, ClusterIP: ip, ClusterIPs: []string{ip},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}},
		},
	}
	if nodePort != 0 {
		svc.Spec.Type = corev1.ServiceTypeNodePort
		svc.Spec.Ports[0].NodePort = nodePort
	}
	return svc
}

func slice(n, svc string, port int32, addrs ...string) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: n, Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(port), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for _, a := range addrs {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{a}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
	}
	return s
}

func node(addr, zone string) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: testNode, Labels: map[string]string{corev1.LabelTopologyZone: zone}},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: addr}}},
	}
}

// frontends renders a Service's frontends and backends on one line.
func frontends(svc loadbalancer.Service) string {
	var parts []string
	for _, fe := range svc.Frontends {
		var bes []string
		for _, b := range fe.Backends {
			bes = append(bes, fmt.Sprintf("%s:%d/%s", b.Addr, b.Port, b.State))
		}
		parts = append(parts, fmt.Sprintf("%s->[%s]", fe.Frontend, strings.Join(bes, " ")))
	}
	return strings.Join(parts, " ")
}

func findService(u Update, n loadbalancer.ServiceName) (loadbalancer.Service, bool) {
	for _, s := range u.Upserted {
		if s.Name == n {
			return s, true
		}
	}
	return loadbalancer.Service{}, false
}

func TestFullUpdateThenOnlyChangedServices(t *testing.T) {
	h := newHarness(t,
		service("a", "10.96.0.1", 0), slice("a-1", "a", 8080, "10.0.1.1"),
		service("b", "10.96.0.2", 30002), slice("b-1", "b", 8080, "10.0.2.1"),
		service("c", "10.96.0.3", 0), slice("c-1", "c", 8080, "10.0.3.1"),
		node("192.168.1.10", "zone-a"))
	u := h.next()
	if !u.Full || len(u.Upserted) != 3 || len(u.Deleted) != 0 {
		t.Fatalf("first update: full=%v upserted=%d deleted=%d, want a full update of 3", u.Full, len(u.Upserted), len(u.Deleted))
	}
	if b, _ := findService(u, name("b")); !strings.Contains(frontends(b), "192.168.1.10:30002/TCP") {
		t.Fatalf("b has no NodePort frontend: %s", frontends(b))
	}
	h.translations()

	// An EndpointSlice change recomputes its Service and no other.
	ctx := t.Context()
	if _, err := h.client.DiscoveryV1().EndpointSlices(ns).Update(ctx, slice("a-1", "a", 8080, "10.0.1.1", "10.0.1.2"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	u = h.next()
	a, ok := findService(u, name("a"))
	if u.Full || len(u.Upserted) != 1 || !ok || len(a.Frontends[0].Backends) != 2 {
		t.Fatalf("after a slice update: %+v, want only a with two backends", u)
	}
	if got := h.translations(); len(got) != 1 || got[name("a")] != 1 {
		t.Fatalf("translations after a's slice changed: %v, want only a once", got)
	}

	// A new node address recomputes only the Service with a nodePort.
	if _, err := h.client.CoreV1().Nodes().Update(ctx, node("192.168.1.11", "zone-a"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	u = h.next()
	b, ok := findService(u, name("b"))
	if len(u.Upserted) != 1 || !ok || !strings.Contains(frontends(b), "192.168.1.11:30002/TCP") {
		t.Fatalf("after the node address changed: %+v, want only b on 192.168.1.11", u)
	}
	if got := h.translations(); len(got) != 1 || got[name("b")] != 1 {
		t.Fatalf("translations after the node changed: %v, want only b once", got)
	}
}

func TestZoneChangeRecomputesOnlyHintedServices(t *testing.T) {
	hinted := slice("a-1", "a", 8080, "10.0.1.1", "10.0.1.2")
	hinted.Endpoints[0].Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: "zone-a"}}}
	hinted.Endpoints[1].Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: "zone-b"}}}
	h := newHarness(t, service("a", "10.96.0.1", 0), hinted,
		service("c", "10.96.0.3", 30003), slice("c-1", "c", 8080, "10.0.3.1"),
		node("192.168.1.10", "zone-a"))
	u := h.next()
	if a, _ := findService(u, name("a")); !strings.Contains(frontends(a), "[10.0.1.1:8080/active]") {
		t.Fatalf("zone-a should use only its hinted endpoint: %s", frontends(a))
	}
	h.translations()
	if _, err := h.client.CoreV1().Nodes().Update(t.Context(), node("192.168.1.10", "zone-b"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	u = h.next()
	a, ok := findService(u, name("a"))
	if len(u.Upserted) != 1 || !ok || !strings.Contains(frontends(a), "[10.0.1.2:8080/active]") {
		t.Fatalf("after moving to zone-b: %+v, want only a, with zone-b's endpoint", u)
	}
	if got := h.translations(); len(got) != 1 || got[name("a")] != 1 {
		t.Fatalf("translations after the zone changed: %v, want only a (c's nodePort does not depend on the zone)", got)
	}
}

func TestDeletionAndSkipDeliverDeleted(t *testing.T) {
	h := newHarness(t, service("a", "10.96.0.1", 0), service("b", "10.96.0.2", 0), node("192.168.1.10", "z"))
	if u := h.next(); len(u.Upserted) != 2 {
		t.Fatalf("full update: %+v", u)
	}
	ctx := t.Context()
	if err := h.client.CoreV1().Services(ns).Delete(ctx, "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if u := h.next(); len(u.Deleted) != 1 || u.Deleted[0] != name("a") || len(u.Upserted) != 0 {
		t.Fatalf("after deleting a: %+v, want a deleted", u)
	}
	// Becoming ExternalName means nothing to program: delivered as deleted.
	b := service("b", "", 0)
	b.Spec = corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "example.com"}
	if _, err := h.client.CoreV1().Services(ns).Update(ctx, b, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if u := h.next(); len(u.Deleted) != 1 || u.Deleted[0] != name("b") {
		t.Fatalf("after b became ExternalName: %+v, want b deleted", u)
	}
}

// A slice's endpoints belong to the Service its label names: relabelled,
// they move to the other Service; unlabelled or deleted, they go; a second
// slice of the same Service adds to the first.
func TestSliceFollowsItsLabel(t *testing.T) {
	h := newHarness(t, service("a", "10.96.0.1", 0), service("b", "10.96.0.2", 0),
		slice("s-1", "a", 8080, "10.0.1.1"), node("192.168.1.10", "z"))
	u := h.next()
	a, _ := findService(u, name("a"))
	if got := frontends(a); got != "10.96.0.1:80/TCP->[10.0.1.1:8080/active]" {
		t.Fatalf("full update: a is %s", got)
	}
	ctx := t.Context()
	slices := h.client.DiscoveryV1().EndpointSlices(ns)
	// want waits for the updates that bring both Services to the given
	// frontends.
	got := map[loadbalancer.ServiceName]string{}
	for _, s := range u.Upserted {
		got[s.Name] = frontends(s)
	}
	want := func(what, wantA, wantB string) {
		t.Helper()
		for got[name("a")] != wantA || got[name("b")] != wantB {
			u := h.next()
			for _, s := range u.Upserted {
				got[s.Name] = frontends(s)
			}
			for _, n := range u.Deleted {
				got[n] = "deleted"
			}
			t.Logf("%s: a %q, b %q", what, got[name("a")], got[name("b")])
		}
	}
	if _, err := slices.Update(ctx, slice("s-1", "b", 8080, "10.0.1.1"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	want("relabelled to b", "10.96.0.1:80/TCP->[]", "10.96.0.2:80/TCP->[10.0.1.1:8080/active]")
	if _, err := slices.Create(ctx, slice("s-2", "b", 8080, "10.0.2.1"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	want("a second slice of b", "10.96.0.1:80/TCP->[]", "10.96.0.2:80/TCP->[10.0.1.1:8080/active 10.0.2.1:8080/active]")
	unlabelled := slice("s-1", "b", 8080, "10.0.1.1")
	unlabelled.Labels = nil
	if _, err := slices.Update(ctx, unlabelled, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	want("s-1 unlabelled", "10.96.0.1:80/TCP->[]", "10.96.0.2:80/TCP->[10.0.2.1:8080/active]")
	if err := slices.Delete(ctx, "s-2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	want("s-2 deleted", "10.96.0.1:80/TCP->[]", "10.96.0.2:80/TCP->[]")
}

func TestProblemsAreEventedOnce(t *testing.T) {
	bad := slice("a-manual", "a", 8080, "10.0.1.1")
	bad.Ports = append(bad.Ports, discoveryv1.EndpointPort{Name: ptr.To("htp"), Port: ptr.To[int32](81)})
	h := newHarness(t, service("a", "10.96.0.1", 0), bad, node("192.168.1.10", "z"))
	h.next()
	ev := h.event()
	if !strings.Contains(ev, "Warning "+ReasonCannotProgram) || !strings.Contains(ev, "ports[1]") {
		t.Fatalf("event %q, want a warning about ports[1]", ev)
	}
	// Another change to the Service translates it again with the same
	// problem: no second event.
	svc := service("a", "10.96.0.1", 0)
	svc.Spec.Ports[0].Port = 81
	if _, err := h.client.CoreV1().Services(ns).Update(t.Context(), svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.next()
	select {
	case ev := <-h.events.Events:
		t.Fatalf("second event %q for a problem already reported", ev)
	default:
	}
}

func TestProgramErrorEventedOnce(t *testing.T) {
	h := newHarness(t, service("a", "10.96.0.1", 0), node("192.168.1.10", "z"))
	h.next()
	conflict := &loadbalancer.ConflictError{Service: name("a"), Owner: name("x")}
	h.w.ReportProgramError(name("a"), conflict)
	h.w.ReportProgramError(name("a"), conflict)
	if ev := h.event(); !strings.Contains(ev, ReasonFrontendConflict) {
		t.Fatalf("event %q, want %s", ev, ReasonFrontendConflict)
	}
	select {
	case ev := <-h.events.Events:
		t.Fatalf("repeated error evented again: %q", ev)
	default:
	}
	h.w.ReportProgramError(name("a"), nil)
	h.w.ReportProgramError(name("a"), conflict)
	h.event() // cleared and back: reported again
}

// TestChangesCoalesceWhileHandlerIsBusy: a Service marked dirty many times
// while the handler is busy is translated once afterwards.
func TestChangesCoalesceWhileHandlerIsBusy(t *testing.T) {
	h := newHarness(t, service("a", "10.96.0.1", 0), slice("a-1", "a", 8080, "10.0.1.1"),
		service("b", "10.96.0.2", 0), slice("b-1", "b", 8080, "10.0.2.1"), node("192.168.1.10", "z"))
	h.next()
	h.translations()
	h.block = make(chan struct{})
	ctx := t.Context()
	// The first change is handed over at once and holds the handler.
	if _, err := h.client.DiscoveryV1().EndpointSlices(ns).Update(ctx, slice("a-1", "a", 8080, "10.0.1.2"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.count[name("a")] == 1
	})
	for range 50 {
		h.w.markDirty(name("a"))
	}
	// b changes after a's marks: once its update is out, a's batch is done.
	if _, err := h.client.DiscoveryV1().EndpointSlices(ns).Update(ctx, slice("b-1", "b", 8080, "10.0.2.2"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	close(h.block)
	if u := h.next(); len(u.Upserted) != 1 || u.Upserted[0].Name != name("a") {
		t.Fatalf("first update %+v, want a", u)
	}
	for {
		u := h.next()
		if _, ok := findService(u, name("a")); ok {
			t.Fatalf("a delivered again although unchanged: %+v", u)
		}
		if _, ok := findService(u, name("b")); ok {
			break
		}
	}
	if got := h.translations(); got[name("a")] != 2 || got[name("b")] != 1 {
		t.Fatalf("translations %v, want a twice (its change, then its 50 marks at once) and b once", got)
	}
}

func (h *harness) event() string {
	h.t.Helper()
	select {
	case ev := <-h.events.Events:
		return ev
	case <-time.After(10 * time.Second):
		h.t.Fatal("no event within 10s")
	}
	return ""
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}
