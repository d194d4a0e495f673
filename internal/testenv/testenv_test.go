package testenv

import (
	"errors"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
)

func TestControlPlane(t *testing.T) {
	start := time.Now()
	env := StartForTest(t, Options{})
	t.Logf("control plane ready in %v (%s)", time.Since(start).Round(time.Millisecond), env.Name)
	ctx := t.Context()
	cs := env.Clientset

	v, err := cs.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if v.GitVersion != "v1.37.2" {
		t.Errorf("server version %q, want v1.37.2", v.GitVersion)
	}

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "fp-test"}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "fp-test"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}},
	}
	created, err := cs.CoreV1().Services("fp-test").Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !env.ServiceCIDR.Contains(mustAddr(t, created.Spec.ClusterIP)) {
		t.Errorf("ClusterIP %q outside %v", created.Spec.ClusterIP, env.ServiceCIDR)
	}

	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: "web-1", Namespace: "fp-test",
			Labels: map[string]string{discoveryv1.LabelServiceName: "web"},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{"10.244.1.5"},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
		}},
		Ports: []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	if _, err := cs.DiscoveryV1().EndpointSlices("fp-test").Create(ctx, slice, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	gotSvc, err := cs.CoreV1().Services("fp-test").Get(ctx, "web", metav1.GetOptions{})
	if err != nil || gotSvc.Spec.ClusterIP != created.Spec.ClusterIP {
		t.Fatalf("read back service: %v %+v", err, gotSvc)
	}
	gotSlice, err := cs.DiscoveryV1().EndpointSlices("fp-test").Get(ctx, "web-1", metav1.GetOptions{})
	if err != nil || gotSlice.Endpoints[0].Addresses[0] != "10.244.1.5" || *gotSlice.Ports[0].Port != 8080 {
		t.Fatalf("read back slice: %v %+v", err, gotSlice)
	}

	checkKubeProxyKubeconfig(t, env)
	stopAndCheckGone(t, env)
}

// checkKubeProxyKubeconfig uses the kube-proxy identity, which RBAC lets
// list Services but not Secrets.
func checkKubeProxyKubeconfig(t *testing.T, env *Env) {
	path := t.TempDir() + "/kube-proxy.kubeconfig"
	if err := env.WriteKubeconfig(path, env.KubeProxy); err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(cfg)
	if _, err := cs.CoreV1().Services("").List(t.Context(), metav1.ListOptions{}); err != nil {
		t.Errorf("kube-proxy list services: %v", err)
	}
	if _, err := cs.CoreV1().Secrets("").List(t.Context(), metav1.ListOptions{}); err == nil {
		t.Errorf("kube-proxy could list secrets; RBAC not in force")
	}
}

func stopAndCheckGone(t *testing.T, env *Env) {
	pids := env.PIDs()
	if len(pids) != 3 {
		t.Errorf("got %d children, want 3", len(pids))
	}
	if err := env.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := env.Stop(); err != nil { // idempotent
		t.Fatal(err)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("pid %d still exists after Stop (kill 0: %v)", pid, err)
		}
	}
	if _, err := syscall.Open(env.NetnsPath(), syscall.O_RDONLY, 0); err == nil {
		t.Errorf("netns %s still exists after Stop", env.NetnsPath())
	}
}

// TestParallelEnvs starts two envs at once: they must not collide.
func TestParallelEnvs(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two control planes")
	}
	// Start, not StartForTest: t.Fatal and t.Skip belong to the test goroutine.
	var wg sync.WaitGroup
	envs := make([]*Env, 2)
	errs := make([]error, 2)
	for i := range envs {
		wg.Go(func() { envs[i], errs[i] = Start(t.Context(), Options{NoControllerManager: i == 1}) })
	}
	wg.Wait()
	for i, env := range envs {
		if env != nil {
			t.Cleanup(func() { _ = env.Stop() })
		}
		if errors.Is(errs[i], ErrNoBinaries) || errors.Is(errs[i], errNotRoot) {
			skipOrFail(t, errs[i].Error())
		}
		if errs[i] != nil {
			t.Fatalf("env %d: %v", i, errs[i])
		}
	}
	if envs[0].Host == envs[1].Host {
		t.Fatalf("both envs at %s", envs[0].Host)
	}
	for _, env := range envs {
		v, err := env.Clientset.Discovery().ServerVersion()
		if err != nil || !strings.HasPrefix(v.GitVersion, "v1.37") {
			t.Errorf("%s: version %v %v", env.Name, v, err)
		}
	}
}

func mustAddr(t *testing.T, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
