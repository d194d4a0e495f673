package lbipam_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/fastpath-net/fastpath/internal/lbipam"
	"github.com/fastpath-net/fastpath/internal/testenv"
)

// api is one real apiserver with the pool CRD, shared by the subtests of
// TestOnAPIServer (a start costs seconds). Every subtest uses its own
// namespace and pools that select only it, with addresses no other
// subtest uses, so that pools of finished subtests neither serve nor
// overlap its Services.
type api struct {
	env *testenv.Env
	cs  kubernetes.Interface
	dyn dynamic.Interface
}

func startAPI(t *testing.T) *api {
	env := testenv.StartForTest(t, testenv.Options{NoControllerManager: true})
	dyn, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	testenv.InstallCRD(t, dyn, filepath.Join("..", "..", "deploy", "crds", "fastpathloadbalancerippools.yaml"), lbipam.PoolGVR)
	return &api{env: env, cs: env.Clientset, dyn: dyn}
}

func testLog(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, nil)).With("test", t.Name())
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// run starts a controller (as if it led) until the returned stop is
// called or the subtest ends; stop waits until it has returned.
func (a *api) run(t *testing.T) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- lbipam.NewController(a.cs, a.dyn, testLog(t)).Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("controller: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

func (a *api) namespace(t *testing.T, name string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := a.cs.CoreV1().Namespaces().Create(t.Context(), ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return name
}

// pool creates a pool from YAML of its spec.
func (a *api) pool(t *testing.T, name, spec string) error {
	t.Helper()
	var s map[string]any
	if err := yaml.Unmarshal([]byte(spec), &s); err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "fastpath.io/v1alpha1", "kind": "FastpathLoadBalancerIPPool",
		"metadata": map[string]any{"name": name}, "spec": s,
	}}
	_, err := a.dyn.Resource(lbipam.PoolGVR).Create(t.Context(), u, metav1.CreateOptions{})
	return err
}

func (a *api) mustPool(t *testing.T, name, spec string) {
	t.Helper()
	if err := a.pool(t, name, spec); err != nil {
		t.Fatalf("pool %s: %v", name, err)
	}
}

// nsPool is a pool for namespace ns only.
func (a *api) nsPool(t *testing.T, name, ns, blocks string) {
	t.Helper()
	a.mustPool(t, name, fmt.Sprintf("blocks: %s\nserviceSelector: {matchLabels: {io.kubernetes.service.namespace: %s}}", blocks, ns))
}

func (a *api) patchPool(t *testing.T, name, mergePatch string) {
	t.Helper()
	if _, err := a.dyn.Resource(lbipam.PoolGVR).Patch(t.Context(), name, "application/merge-patch+json", []byte(mergePatch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// svc creates a LoadBalancer Service with TCP ports, changed by opts.
func (a *api) svc(t *testing.T, ns, name string, ports []int32, opts ...func(*corev1.Service)) {
	t.Helper()
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: map[string]string{}},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer},
	}
	for _, p := range ports {
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: fmt.Sprint("p", p), Protocol: corev1.ProtocolTCP, Port: p})
	}
	for _, o := range opts {
		o(s)
	}
	if _, err := a.cs.CoreV1().Services(ns).Create(t.Context(), s, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create Service %s/%s: %v", ns, name, err)
	}
}

func annotate(k, v string) func(*corev1.Service) {
	return func(s *corev1.Service) { s.Annotations[k] = v }
}

func (a *api) get(t *testing.T, ns, name string) *corev1.Service {
	t.Helper()
	s, err := a.cs.CoreV1().Services(ns).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// state is a Service's address, or "-" and its condition's reason.
func state(s *corev1.Service) string {
	var ips []string
	for _, in := range s.Status.LoadBalancer.Ingress {
		ips = append(ips, in.IP)
	}
	c := meta.FindStatusCondition(s.Status.Conditions, lbipam.ConditionType)
	switch {
	case len(ips) > 0 && c != nil && c.Status == metav1.ConditionTrue:
		return strings.Join(ips, ",")
	case len(ips) > 0:
		return strings.Join(ips, ",") + " (no condition)"
	case c != nil:
		return "-" + c.Reason
	}
	return "-"
}

// eventually polls until each Service ns/name is in its wanted state
// (see state), failing after 30s with what they were.
func (a *api) eventually(t *testing.T, ns string, want map[string]string) {
	t.Helper()
	var got map[string]string
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		got = map[string]string{}
		ok := true
		for name, w := range want {
			got[name] = state(a.get(t, ns, name))
			ok = ok && got[name] == w
		}
		if ok {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("Services of %s: got %v, want %v", ns, got, want)
}

// message is the message of the Service's condition.
func message(s *corev1.Service) string {
	if c := meta.FindStatusCondition(s.Status.Conditions, lbipam.ConditionType); c != nil {
		return c.Message
	}
	return ""
}

// event waits for an Event on Service ns/name with reason and a message
// containing want.
func (a *api) event(t *testing.T, ns, name, reason, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var seen []string
	for time.Now().Before(deadline) {
		evs, err := a.cs.CoreV1().Events(ns).List(t.Context(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
		if err != nil {
			t.Fatal(err)
		}
		seen = seen[:0]
		for _, e := range evs.Items {
			if e.Reason == reason && strings.Contains(e.Message, want) && e.Source.Component == lbipam.Component {
				return
			}
			seen = append(seen, e.Reason+": "+e.Message)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no Event %s %q on %s/%s; saw %q", reason, want, ns, name, seen)
}

// poolStatus waits until the pool's status has the used count and a
// condition of type with status, and returns that condition's message.
func (a *api) poolStatus(t *testing.T, name string, used int64, condType, condStatus string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last map[string]any
	for time.Now().Before(deadline) {
		u, err := a.dyn.Resource(lbipam.PoolGVR).Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		last, _, _ = unstructured.NestedMap(u.Object, "status")
		got, _, _ := unstructured.NestedInt64(u.Object, "status", "used")
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, c := range conds {
			m := c.(map[string]any)
			if got == used && m["type"] == condType && m["status"] == condStatus {
				msg, _ := m["message"].(string)
				return msg
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("pool %s: status %v; want used=%d and %s=%s", name, last, used, condType, condStatus)
	return ""
}
