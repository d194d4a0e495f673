package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/fastpath-net/fastpath/internal/nettopo"
	"github.com/fastpath-net/fastpath/internal/testenv"
)

const k8sNS = "fp-e2e"

// TestKubernetesServiceThroughClusterIP: the real agent, watching a real
// apiserver as system:kube-proxy, programs a Service and its EndpointSlice;
// a client reaches both backends through the ClusterIP the apiserver
// allocated; scaling the slice down stops new connections to the removed
// backend; a Service deleted while the agent is stopped is gone after it
// restarts. It logs how long an EndpointSlice change takes from the
// apiserver accepting it to the pinned map holding it.
func TestKubernetesServiceThroughClusterIP(t *testing.T) {
	l := newLab(t, "be1", "be2")
	env := testenv.StartForTest(t, testenv.Options{})
	kubeconfig := filepath.Join(t.TempDir(), "kube-proxy.kubeconfig")
	if err := env.WriteKubeconfig(kubeconfig, env.KubeProxy); err != nil {
		t.Fatal(err)
	}
	l.kube = &kubeSource{kubeconfig: kubeconfig, nodeName: "e2e-node"}
	cs := env.Clientset
	createNodeAndNamespace(t, cs, l.kube.nodeName, l.star.Host("client").NodeIP.String())
	l.startAgent()

	svc, err := cs.CoreV1().Services(k8sNS).Create(t.Context(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: k8sNS},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	frontend := svc.Spec.ClusterIP + ":80/TCP"
	slice := webSlice(l.backendAddr("be1"), l.backendAddr("be2"))
	if _, err := cs.DiscoveryV1().EndpointSlices(k8sNS).Create(t.Context(), slice, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	l.waitBackends(frontend, l.backendAddr("be1")+":8080", l.backendAddr("be2")+":8080")
	if seen := askVIP(t, l.client(), svc.Spec.ClusterIP+":80", 40); seen["be1"] == 0 || seen["be2"] == 0 || len(seen) != 2 {
		t.Fatalf("40 connections to ClusterIP %s reached %v; want both be1 and be2 and nothing else", svc.Spec.ClusterIP, seen)
	}

	// Scale down to be1 (and back, to time more changes), timing each.
	be1, be2 := l.backendAddr("be1")+":8080", l.backendAddr("be2")+":8080"
	var took []time.Duration
	for i := range 11 {
		want := []string{be1}
		slice.Endpoints = webSlice(l.backendAddr("be1")).Endpoints
		if i%2 == 1 {
			want = []string{be1, be2}
			slice.Endpoints = webSlice(l.backendAddr("be1"), l.backendAddr("be2")).Endpoints
		}
		took = append(took, timeSliceUpdate(t, l, cs, slice, frontend, want...))
	}
	slices.Sort(took)
	t.Logf("EndpointSlice change, apiserver accepted -> pinned map changed, %d changes: min %v, median %v, max %v",
		len(took), took[0], took[len(took)/2], took[len(took)-1])
	if seen := askVIP(t, l.client(), svc.Spec.ClusterIP+":80", 20); seen["be1"] != 20 {
		t.Fatalf("after scaling down to be1, 20 new connections reached %v", seen)
	}

	// Deleted while no agent runs: the next agent's first full resync
	// removes it, and keeps the Services that still exist.
	l.stopAgent()
	if err := cs.CoreV1().Services(k8sNS).Delete(t.Context(), "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	l.startAgent()
	waitGone(t, l, frontend)
	l.waitBackends("10.96.0.1:443/TCP", env.AdvertiseAddress.String()+":6443")
}

// waitGone waits until the pinned maps no longer hold frontend.
func waitGone(t *testing.T, l *lab, frontend string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := l.backendsOf(frontend)
		if err != nil && strings.Contains(err.Error(), "not programmed") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("frontend %s still programmed (%v, %v) 10s after its Service was deleted\nagent log:\n%s", frontend, got, err, l.agentLog)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// timeSliceUpdate updates the slice and returns the time from the
// apiserver accepting the update (the call returning) to the pinned map
// holding want.
func timeSliceUpdate(t *testing.T, l *lab, cs kubernetes.Interface, s *discoveryv1.EndpointSlice, frontend string, want ...string) time.Duration {
	t.Helper()
	if _, err := cs.DiscoveryV1().EndpointSlices(k8sNS).Update(t.Context(), s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	accepted := time.Now()
	waitMapBackends(t, l, frontend, want...)
	return time.Since(accepted).Round(10 * time.Microsecond)
}

// waitMapBackends polls the pinned maps every millisecond (waitBackends
// polls every 20ms, too coarse to time a change) until frontend has
// exactly want.
func waitMapBackends(t *testing.T, l *lab, frontend string, want ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if got, err := l.backendsOf(frontend); err == nil && sameSet(got, want) {
			return
		}
		time.Sleep(time.Millisecond)
	}
	l.waitBackends(frontend, want...) // fails with the details
}

func createNodeAndNamespace(t *testing.T, cs kubernetes.Interface, node, addr string) {
	t.Helper()
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: node},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: addr}}},
	}
	if _, err := cs.CoreV1().Nodes().Create(t.Context(), n, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: k8sNS}}
	if _, err := cs.CoreV1().Namespaces().Create(t.Context(), ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// webSlice is a hand-made EndpointSlice for Service web (which has no
// selector) with the given backends on port 8080.
func webSlice(addrs ...string) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: k8sNS, Labels: map[string]string{
			discoveryv1.LabelServiceName: "web", discoveryv1.LabelManagedBy: "fastpath-e2e"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for _, a := range addrs {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{a},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
	}
	return s
}

// askVIP connects n times to addr and counts the answering backends.
func askVIP(t *testing.T, ns *nettopo.NS, addr string, n int) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for i := range n {
		name, err := nettopo.AskTCP(ns, addr, timeout)
		if err != nil {
			t.Fatalf("connection %d to %s: %v", i, addr, err)
		}
		seen[name]++
	}
	return seen
}

// TestKubernetesUnreachableKeepsPinnedState: an agent restarted with an
// apiserver it cannot reach attaches at once and keeps serving what the
// previous agent pinned, through several periodic-resync periods: an empty
// table must never be "resynced" into the maps.
func TestKubernetesUnreachableKeepsPinnedState(t *testing.T) {
	l := startWeb(t)
	l.stopAgent()
	kubeconfig := filepath.Join(t.TempDir(), "unreachable.kubeconfig")
	// Port 1 on loopback: connections are refused at once, the fastest way
	// for client-go to fail and retry.
	cfg := "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: \"https://127.0.0.1:1\", insecure-skip-tls-verify: true}\n" +
		"users:\n- name: u\n  user: {token: x}\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\ncurrent-context: c\n"
	if err := os.WriteFile(kubeconfig, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	l.kube = &kubeSource{kubeconfig: kubeconfig, nodeName: "e2e-node"}
	l.extra = []string{"--resync-period", "100ms"}
	l.startAgent()
	waitLog(t, l, "attached per-packet load balancer")
	time.Sleep(time.Second) // ten resync periods
	if got, err := l.backendsOf(httpFrontend); err != nil || !sameSet(got, []string{l.backendAddr("be1") + ":8080", l.backendAddr("be2") + ":8080"}) {
		t.Fatalf("with the apiserver unreachable, %s holds %v (%v); want the pinned be1 and be2\nagent log:\n%s", httpFrontend, got, err, l.agentLog)
	}
	waitLog(t, l, "skipping the periodic resync")
	if seen := askMany(t, l.client(), 20); seen["be1"]+seen["be2"] != 20 {
		t.Fatalf("20 connections with the apiserver unreachable reached %v", seen)
	}
}

func waitLog(t *testing.T, l *lab, text string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(l.agentLog.String(), text) {
		if time.Now().After(deadline) {
			t.Fatalf("agent log has no %q within 10s:\n%s", text, l.agentLog)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
