package k8s

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/fastpath-net/fastpath/internal/k8s/svctranslate"
	"github.com/fastpath-net/fastpath/internal/loadbalancer"
	"github.com/fastpath-net/fastpath/internal/testenv"
)

// TestProxySelector: without a name the informers see what kube-proxy
// sees; with one, only what carries it. Headless slices stay out in both.
func TestProxySelector(t *testing.T) {
	const key = svctranslate.LabelServiceProxyName
	headless := map[string]string{svctranslate.LabelHeadless: ""}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   map[string]bool // proxy name -> selected
	}{
		{"unlabelled", nil, map[string]bool{"": true, "fastpath": false}},
		{"ours", map[string]string{key: "fastpath"}, map[string]bool{"": false, "fastpath": true}},
		{"another's", map[string]string{key: "other"}, map[string]bool{"": false, "fastpath": false}},
		{"empty value", map[string]string{key: ""}, map[string]bool{"": false, "fastpath": false}},
		{"headless", headless, map[string]bool{"": false, "fastpath": false}},
		{"ours, headless", map[string]string{key: "fastpath", svctranslate.LabelHeadless: ""}, map[string]bool{"": false, "fastpath": false}},
	} {
		for name, want := range tc.want {
			sel, err := labels.Parse(proxySelector(name))
			if err != nil {
				t.Fatalf("proxySelector(%q) = %q: %v", name, proxySelector(name), err)
			}
			if got := sel.Matches(labels.Set(tc.labels)); got != want {
				t.Errorf("%s, name %q: selected %v, want %v", tc.name, name, got, want)
			}
			// Translate agrees with the informers on every Service they let through.
			if got := svctranslate.ServesProxyName(tc.labels, name); want && !got {
				t.Errorf("%s, name %q: selected but ServesProxyName says no", tc.name, name)
			}
		}
	}
}

func TestValidateProxyName(t *testing.T) {
	for name, ok := range map[string]bool{"fastpath": true, "fast-path.v2": true, "fast path": false, "-x": false, strings.Repeat("a", 64): false} {
		if err := ValidateProxyName(name); (err == nil) != ok {
			t.Errorf("ValidateProxyName(%q) = %v, want ok=%v", name, err, ok)
		}
	}
	if _, err := New(Config{ProxyName: "a/b"}); err == nil || !strings.Contains(err.Error(), "not a label value") {
		t.Errorf("New with proxy name a/b: %v, want a label value error", err)
	}
}

// TestServiceProxyNameAgainstRealAPIServer: two watchers side by side on a
// real apiserver, one with --service-proxy-name fastpath: each programs
// only its own Service, and a Service relabelled moves from one to the
// other.
func TestServiceProxyNameAgainstRealAPIServer(t *testing.T) {
	skipShort(t)
	env := testenv.StartForTest(t, testenv.Options{NoControllerManager: true})
	admin := env.Clientset
	ctx := t.Context()
	if _, err := admin.CoreV1().Nodes().Create(ctx, itNodeObj("192.168.50.10"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: itNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ours := map[string]string{svctranslate.LabelServiceProxyName: "fastpath"}
	mine := createService(t, admin, labelledService("mine", ours))
	plain := createService(t, admin, labelledService("plain", nil))
	mineSlice := labelledSlice("mine-1", "mine", "10.0.7.1", ours)
	plainSlice := labelledSlice("plain-1", "plain", "10.0.7.2", nil)
	createSlice(t, admin, mineSlice)
	createSlice(t, admin, plainSlice)

	named, unnamed := &applied{}, &applied{}
	runWatcherNamed(t, admin, named, "fastpath")
	runWatcher(t, admin, unnamed)
	mineWant := mine.Spec.ClusterIP + ":80/TCP->[10.0.7.1:8080/active]"
	plainWant := plain.Spec.ClusterIP + ":80/TCP->[10.0.7.2:8080/active]"
	// The named watcher has no default/kubernetes either: exactly its one.
	named.wait(t, "named watcher", exactly(map[string]string{"mine": mineWant}, true))
	unnamed.wait(t, "unnamed watcher", exactly(map[string]string{"plain": plainWant}, false))

	// plain is handed to fastpath: its Service and, as the EndpointSlice
	// controller would, its slice take the label.
	plain.Labels = ours
	if _, err := admin.CoreV1().Services(itNS).Update(ctx, plain, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	plainSlice.Labels[svctranslate.LabelServiceProxyName] = "fastpath"
	updateSlice(t, admin, plainSlice)
	named.wait(t, "named watcher after plain is relabelled", exactly(map[string]string{"mine": mineWant, "plain": plainWant}, true))
	unnamed.wait(t, "unnamed watcher after plain is relabelled", exactly(map[string]string{}, false))
}

// exactly checks that the itNS Services programmed are those of want
// (name -> frontends), and nothing of itNS else; alone: nothing of another
// namespace either.
func exactly(want map[string]string, alone bool) func(map[loadbalancer.ServiceName]loadbalancer.Service) error {
	return func(m map[loadbalancer.ServiceName]loadbalancer.Service) error {
		got := map[string]string{}
		for n, svc := range m {
			switch {
			case n.Namespace == itNS:
				got[n.Name] = frontends(svc)
			case alone:
				return fmt.Errorf("%s programmed too", n)
			}
		}
		if !maps.Equal(got, want) {
			return fmt.Errorf("programmed %v, want %v", slices.Sorted(maps.Keys(got)), want)
		}
		return nil
	}
}

func labelledService(name string, lbls map[string]string) *corev1.Service {
	meta := objMeta(name)
	meta.Labels = lbls
	return &corev1.Service{ObjectMeta: meta, Spec: corev1.ServiceSpec{
		Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
}

func labelledSlice(name, svc, addr string, lbls map[string]string) *discoveryv1.EndpointSlice {
	s := handSlice(name, svc, []discoveryv1.EndpointPort{port("http", 8080)}, ep(addr, "", ready()))
	maps.Copy(s.Labels, lbls)
	return s
}
