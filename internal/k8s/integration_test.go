package k8s

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/fastpath-net/fastpath/internal/loadbalancer"
	"github.com/fastpath-net/fastpath/internal/testenv"
)

const (
	itNode = "fp-node"
	itNS   = "fp-k8s"
)

// applied is the table as the agent would hold it: the watcher's updates
// applied in order.
type applied struct {
	mu    sync.Mutex
	svcs  map[loadbalancer.ServiceName]loadbalancer.Service
	fulls int
	dels  []loadbalancer.ServiceName
}

func (a *applied) handle(u Update) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if u.Full {
		a.fulls++
		a.svcs = map[loadbalancer.ServiceName]loadbalancer.Service{}
	}
	for _, s := range u.Upserted {
		a.svcs[s.Name] = s
	}
	for _, n := range u.Deleted {
		delete(a.svcs, n)
		a.dels = append(a.dels, n)
	}
}

// wait polls until check passes on the applied state, failing after 20s
// with check's last complaint.
func (a *applied) wait(t *testing.T, what string, check func(map[loadbalancer.ServiceName]loadbalancer.Service) error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		a.mu.Lock()
		err := check(a.svcs)
		a.mu.Unlock()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// want returns a check that svc is programmed with exactly the frontends
// rendered as by frontends().
func want(n loadbalancer.ServiceName, rendered string) func(map[loadbalancer.ServiceName]loadbalancer.Service) error {
	return func(m map[loadbalancer.ServiceName]loadbalancer.Service) error {
		svc, ok := m[n]
		if !ok {
			return fmt.Errorf("%s not programmed", n)
		}
		if got := frontends(svc); got != rendered {
			return fmt.Errorf("%s:\n got  %s\n want %s", n, got, rendered)
		}
		return nil
	}
}

// TestAgainstRealAPIServer runs the watcher as kube-proxy's identity against
// a real kube-apiserver and controller-manager.
func TestAgainstRealAPIServer(t *testing.T) {
	skipShort(t)
	env := testenv.StartForTest(t, testenv.Options{})
	kubeconfig := filepath.Join(t.TempDir(), "kube-proxy.kubeconfig")
	if err := env.WriteKubeconfig(kubeconfig, env.KubeProxy); err != nil {
		t.Fatal(err)
	}
	client, err := NewClient(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	admin := env.Clientset
	ctx := t.Context()
	if _, err := admin.CoreV1().Nodes().Create(ctx, itNodeObj("192.168.50.10"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	state := &applied{}
	runWatcher(t, client, state)
	// The default kubernetes Service is programmed like any other.
	state.wait(t, "kubernetes Service", want(loadbalancer.ServiceName{Namespace: "default", Name: "kubernetes"},
		"10.96.0.1:443/TCP->[192.0.2.1:6443/active]"))

	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: itNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	web := createService(t, admin, webService())
	legacy := createService(t, admin, &corev1.Service{ObjectMeta: objMeta("legacy"), Spec: corev1.ServiceSpec{
		Ports: []corev1.ServicePort{{Port: 3306, TargetPort: intstr.FromInt32(3306)}}}})
	np := createService(t, admin, &corev1.Service{ObjectMeta: objMeta("np"), Spec: corev1.ServiceSpec{
		Type: corev1.ServiceTypeNodePort, Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}})
	local := createService(t, admin, &corev1.Service{ObjectMeta: objMeta("local"), Spec: corev1.ServiceSpec{
		Type: corev1.ServiceTypeLoadBalancer, ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
		Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}})
	local.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "198.51.100.7"}} // as MetalLB would
	local, err = admin.CoreV1().Services(itNS).UpdateStatus(ctx, local, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	webSlice := handSlice("web-manual", "web",
		[]discoveryv1.EndpointPort{port("http", 8080), port("metrics", 9090)},
		ep("10.0.1.1", itNode, ready()), ep("10.0.2.1", "other-node", ready()))
	createSlice(t, admin, webSlice)
	createSlice(t, admin, handSlice("legacy-1", "legacy", []discoveryv1.EndpointPort{port("", 3306)}, ep("172.16.5.10", "", ready())))
	createSlice(t, admin, handSlice("np-1", "np", []discoveryv1.EndpointPort{port("http", 8080)}, ep("10.0.3.1", "other-node", ready())))
	createSlice(t, admin, handSlice("local-1", "local", []discoveryv1.EndpointPort{port("http", 8080)},
		ep("10.0.4.1", itNode, ready()), ep("10.0.4.2", "other-node", ready())))

	vip := func(s *corev1.Service) string { return s.Spec.ClusterIP }
	state.wait(t, "web", want(itName("web"), fmt.Sprintf(
		"%[1]s:80/TCP->[10.0.1.1:8080/active 10.0.2.1:8080/active] %[1]s:9090/TCP->[10.0.1.1:9090/active 10.0.2.1:9090/active]", vip(web))))
	state.wait(t, "legacy (no selector)", want(itName("legacy"), vip(legacy)+":3306/TCP->[172.16.5.10:3306/active]"))
	npPort := np.Spec.Ports[0].NodePort
	state.wait(t, "np", want(itName("np"), fmt.Sprintf("%s:80/TCP->[10.0.3.1:8080/active] 192.168.50.10:%d/TCP->[10.0.3.1:8080/active]", vip(np), npPort)))
	lp := local.Spec.Ports[0].NodePort
	both := "[10.0.4.1:8080/active 10.0.4.2:8080/active]"
	state.wait(t, "local (ETP=Local)", want(itName("local"), fmt.Sprintf(
		"%s:80/TCP->%s 198.51.100.7:80/TCP->[10.0.4.1:8080/active] 198.51.100.7:80/TCP internal->%s "+
			"192.168.50.10:%d/TCP->[10.0.4.1:8080/active] 192.168.50.10:%d/TCP internal->%s",
		vip(local), both, both, lp, lp, both)))

	// 10.0.1.1 starts terminating: the ready one alone serves.
	webSlice.Endpoints[0].Conditions = terminating(true)
	updateSlice(t, admin, webSlice)
	state.wait(t, "web after 10.0.1.1 terminates", want(itName("web"), fmt.Sprintf(
		"%[1]s:80/TCP->[10.0.2.1:8080/active] %[1]s:9090/TCP->[10.0.2.1:9090/active]", vip(web))))
	// No ready endpoint left: the serving, terminating one takes over.
	webSlice.Endpoints[1].Conditions = discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(false), Terminating: ptr.To(false)}
	updateSlice(t, admin, webSlice)
	state.wait(t, "web terminating fallback", want(itName("web"), fmt.Sprintf(
		"%[1]s:80/TCP->[10.0.1.1:8080/terminating] %[1]s:9090/TCP->[10.0.1.1:9090/terminating]", vip(web))))

	// The node's address changes (status: a plain Update keeps the old
	// status): the NodePort frontends follow.
	if _, err := admin.CoreV1().Nodes().UpdateStatus(ctx, itNodeObj("192.168.50.11"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	state.wait(t, "np after the node address changed", want(itName("np"), fmt.Sprintf(
		"%s:80/TCP->[10.0.3.1:8080/active] 192.168.50.11:%d/TCP->[10.0.3.1:8080/active]", vip(np), npPort)))

	checkProblemEvent(t, admin)

	if err := admin.CoreV1().Services(itNS).Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	state.wait(t, "web deleted", func(m map[loadbalancer.ServiceName]loadbalancer.Service) error {
		if _, ok := m[itName("web")]; ok {
			return errors.New("web still programmed")
		}
		return nil
	})
	state.mu.Lock()
	defer state.mu.Unlock()
	if state.fulls != 1 || len(state.dels) != 1 || state.dels[0] != itName("web") {
		t.Fatalf("full updates %d, deletions %v; want one full update and web deleted once", state.fulls, state.dels)
	}
}

// checkProblemEvent: a hand-made slice with a port the Service lacks gives
// a Warning Event on the slice, written with kube-proxy's permissions.
func checkProblemEvent(t *testing.T, admin kubernetes.Interface) {
	t.Helper()
	createSlice(t, admin, handSlice("web-typo", "web", []discoveryv1.EndpointPort{port("htp", 8080)}, ep("10.0.1.9", "", ready())))
	deadline := time.Now().Add(20 * time.Second)
	for {
		evs, err := admin.CoreV1().Events(itNS).List(t.Context(), metav1.ListOptions{FieldSelector: "involvedObject.name=web-typo"})
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs.Items {
			if ev.Reason == ReasonCannotProgram && ev.Source.Component == Component && ev.Type == corev1.EventTypeWarning &&
				ev.InvolvedObject.Kind == "EndpointSlice" && strings.Contains(ev.Message, "ports[0]") {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s event on EndpointSlice web-typo; events: %+v", ReasonCannotProgram, evs.Items)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runWatcher runs a watcher until the returned stop is called or the test
// ends.
func runWatcher(t *testing.T, client kubernetes.Interface, state *applied) (stop func()) {
	t.Helper()
	return runWatcherNamed(t, client, state, "")
}

// runWatcherNamed is runWatcher with --service-proxy-name proxyName.
func runWatcherNamed(t *testing.T, client kubernetes.Interface, state *applied, proxyName string) (stop func()) {
	t.Helper()
	w, err := New(Config{Client: client, NodeName: itNode, ProxyName: proxyName, Log: quietLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, state.handle) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
	t.Cleanup(stop)
	return stop
}

func webService() *corev1.Service {
	return &corev1.Service{ObjectMeta: objMeta("web"), Spec: corev1.ServiceSpec{
		Selector: map[string]string{"app": "web"},
		Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, TargetPort: intstr.FromString("web-http")},
			{Name: "metrics", Port: 9090, TargetPort: intstr.FromInt32(9090)},
		},
	}}
}

func itNodeObj(addr string) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: itNode, Labels: map[string]string{corev1.LabelTopologyZone: "zone-a"}},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: addr}}},
	}
}

func objMeta(n string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: n, Namespace: itNS} }

func itName(n string) loadbalancer.ServiceName {
	return loadbalancer.ServiceName{Namespace: itNS, Name: n}
}

// handSlice is a slice made by hand: a managed-by of its own keeps the
// EndpointSlice controller off it (web has a selector, so the controller
// keeps an empty slice of its own next to this one, as there are no pods).
func handSlice(n, svc string, ports []discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: n, Namespace: itNS, Labels: map[string]string{
			discoveryv1.LabelServiceName: svc, discoveryv1.LabelManagedBy: "fastpath-test"}},
		AddressType: discoveryv1.AddressTypeIPv4, Ports: ports, Endpoints: eps,
	}
}

func port(n string, p int32) discoveryv1.EndpointPort {
	return discoveryv1.EndpointPort{Name: ptr.To(n), Port: ptr.To(p), Protocol: ptr.To(corev1.ProtocolTCP)}
}

func ep(addr, nodeName string, c discoveryv1.EndpointConditions) discoveryv1.Endpoint {
	e := discoveryv1.Endpoint{Addresses: []string{addr}, Conditions: c}
	if nodeName != "" {
		e.NodeName = ptr.To(nodeName)
	}
	return e
}

func ready() discoveryv1.EndpointConditions {
	return discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)}
}

func terminating(serving bool) discoveryv1.EndpointConditions {
	return discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(serving), Terminating: ptr.To(true)}
}

func createService(t *testing.T, c kubernetes.Interface, svc *corev1.Service) *corev1.Service {
	t.Helper()
	out, err := c.CoreV1().Services(svc.Namespace).Create(t.Context(), svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func createSlice(t *testing.T, c kubernetes.Interface, s *discoveryv1.EndpointSlice) {
	t.Helper()
	if _, err := c.DiscoveryV1().EndpointSlices(s.Namespace).Create(t.Context(), s, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func updateSlice(t *testing.T, c kubernetes.Interface, s *discoveryv1.EndpointSlice) {
	t.Helper()
	if _, err := c.DiscoveryV1().EndpointSlices(s.Namespace).Update(t.Context(), s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestWaitsForLateAPIServer: started while nothing answers at the
// apiserver's address, the watcher delivers nothing and keeps retrying;
// once the apiserver comes up there, the full state arrives.
func TestWaitsForLateAPIServer(t *testing.T) {
	skipShort(t)
	addr := freeLoopbackPort(t)
	late := testenv.User{Name: "late-reader", Token: "fastpath-late-token", Groups: []string{"system:masters"}}
	// The CA is made when the env starts, so this client cannot know it
	// yet; it skips verification, which the test needs and nothing else.
	cfg := &rest.Config{Host: "https://" + addr, BearerToken: late.Token, TLSClientConfig: rest.TLSClientConfig{Insecure: true}}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	state := &applied{}
	stop := runWatcher(t, client, state)
	time.Sleep(2 * time.Second) // long enough for several failed attempts
	state.mu.Lock()
	fulls := state.fulls
	state.mu.Unlock()
	if fulls != 0 {
		t.Fatal("an update was delivered with no apiserver")
	}
	testenv.StartForTest(t, testenv.Options{ListenAddress: addr, Users: []testenv.User{late}, NoControllerManager: true})
	deadline := time.Now().Add(60 * time.Second)
	for {
		state.mu.Lock()
		fulls, svcs := state.fulls, len(state.svcs)
		state.mu.Unlock()
		if fulls == 1 && svcs >= 1 { // default/kubernetes
			stop() // before the env's cleanup stops the apiserver under it
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("60s after the apiserver came up: %d full updates, %d services", fulls, svcs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// skipShort keeps `make test-unit` (-short) free of apiservers.
func skipShort(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a kube-apiserver; not in -short mode")
	}
}

func freeLoopbackPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}
