package main

import (
	"bytes"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"

	"github.com/fastpath-net/fastpath/internal/identity"
	"github.com/fastpath-net/fastpath/internal/identity/identitytest"
	"github.com/fastpath-net/fastpath/internal/testenv"
)

// TestPolicyTrace runs `fastpathctl policy trace` against a real apiserver:
// a default-deny-ingress policy plus one allowing TCP/80 from pods labelled
// role=client.
func TestPolicyTrace(t *testing.T) {
	env := testenv.StartForTest(t, testenv.Options{NoControllerManager: true})
	ctx := t.Context()
	cs := env.Clientset
	const ns = "fp-trace"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// No controller-manager (faster start): make the ServiceAccount that
	// pod admission wants by hand.
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for i, p := range []struct{ name, role string }{{"server", "server"}, {"client", "client"}, {"other", "other"}} {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: p.name, Labels: map[string]string{"role": p.role}},
			Spec:       corev1.PodSpec{NodeName: "fp-node", Containers: []corev1.Container{{Name: "c", Image: "none"}}},
		}
		created, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ip := "10.44.0." + string(rune('1'+i))
		created.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
		if _, err := cs.CoreV1().Pods(ns).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// The agents numbered the client's label set 4711: trace shows that
	// number, not one of its own.
	dyn, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	identitytest.InstallCRD(t, dyn)
	nsObj, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	alloc := &identity.Allocator{Client: dyn, Start: func(identity.Labels) identity.ID { return 4711 }}
	if id, err := alloc.Allocate(ctx, identity.ForPod(ns, nsObj.Labels, map[string]string{"role": "client"})); err != nil || id != 4711 {
		t.Fatalf("allocate: %d %v", id, err)
	}
	tcp := corev1.ProtocolTCP
	port := intstr.FromInt32(80)
	for _, np := range []*networkingv1.NetworkPolicy{
		{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "deny-all"}, Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "allow-client"}, Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"role": "server"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "client"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}},
			}},
		}},
	} {
		if _, err := cs.NetworkingV1().NetworkPolicies(ns).Create(ctx, np, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	trace := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := run(append([]string{"policy", "trace", "--kubeconfig", env.KubeconfigPath}, args...), &out, &errOut)
		return code, out.String(), errOut.String()
	}
	for _, c := range []struct {
		from, port string
		want       []string
	}{
		{"client", "80/tcp", []string{"ALLOWED", "fp-trace/client (identity 4711)", "ingress of fp-trace/server: allowed by fp-trace/allow-client spec.ingress[0]", "egress of fp-trace/client: allowed: no policy selects"}},
		{"client", "80/udp", []string{"DENIED", "denied: enforced by fp-trace/allow-client, fp-trace/deny-all, and no rule allows identity"}},
		{"other", "80", []string{"DENIED", "on tcp/80"}},
	} {
		code, out, errOut := trace("--from", ns+"/"+c.from, "--to", ns+"/server", "--port", c.port)
		if code != 0 {
			t.Fatalf("%s %s: exit %d: %s", c.from, c.port, code, errOut)
		}
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s %s: output lacks %q:\n%s", c.from, c.port, w, out)
			}
		}
	}
	// An address outside the pods is the world; the server's address is
	// the server.
	if code, out, errOut := trace("--from", "198.51.100.7", "--to", "10.44.0.1", "--port", "80"); code != 0 ||
		!strings.Contains(out, "198.51.100.7 (identity world-ipv4) -> 10.44.0.1 (identity") || !strings.Contains(out, "DENIED") ||
		!strings.Contains(out, "egress: not a pod of this cluster") {
		t.Errorf("trace by address: exit %d\n%s%s", code, out, errOut)
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"-o", "json", "policy", "trace", "--kubeconfig", env.KubeconfigPath, "--from", ns + "/client", "--to", ns + "/server", "--port", "80/tcp"}, &out, &errOut); code != 0 || !strings.Contains(out.String(), `"Allowed": true`) {
		t.Errorf("-o json: exit %d, %s %s", code, out.String(), errOut.String())
	}
	for _, bad := range [][]string{
		{"--from", ns + "/client", "--to", ns + "/server", "--port", "80/icmp"},
		{"--from", "client", "--to", ns + "/server", "--port", "80"},
		{"--from", "10.0.0.300", "--to", ns + "/server", "--port", "80"},
		{"--from", ns + "/client", "--to", ns + "/nope", "--port", "80"},
	} {
		code, _, errOut := trace(bad...)
		if code != 1 || !strings.Contains(errOut, "fastpathctl:") {
			t.Errorf("%v: exit %d, stderr %q; want 1 and a message", bad, code, errOut)
		}
	}
}
