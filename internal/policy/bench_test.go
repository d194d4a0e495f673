package policy_test

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/fastpath-net/fastpath/internal/identity"
	"github.com/fastpath-net/fastpath/internal/policy"
)

// scale builds the benchmark cluster: 20 namespaces (5 teams),
// 1,000 pods (50 apps, one pod of each app per namespace: 1,000
// identities), 500 policies, each allowing an app from another app of its
// namespace and from every pod of one team's namespaces, on one port.
func scale(eng *policy.Engine) {
	for n := range 20 {
		ns := fmt.Sprint("fp-ns", n)
		eng.UpsertNamespace(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"team": fmt.Sprint("t", n%5)}}})
	}
	for i := range 1000 {
		ns := fmt.Sprint("fp-ns", i%20)
		app := fmt.Sprint("app", (i/20)%50)
		ip := fmt.Sprintf("10.%d.%d.%d", i/65536, i/256%256, i%256+1)
		eng.UpsertPod(&corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprint("p", i), Labels: map[string]string{"app": app}},
			Spec:       corev1.PodSpec{NodeName: fmt.Sprint("node", i%10), Containers: []corev1.Container{{Name: "c", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}},
			Status:     corev1.PodStatus{PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}},
		})
	}
	for j := range 500 {
		port := intstr.FromInt32(int32(8000 + j%100))
		eng.UpsertPolicy(&networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprint("fp-ns", j%20), Name: fmt.Sprint("pol", j)},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprint("app", j%50)}},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{
					From: []networkingv1.NetworkPolicyPeer{
						{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprint("app", (j+1)%50)}}},
						{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprint("t", j%5)}}},
					},
					Ports: []networkingv1.NetworkPolicyPort{{Port: &port}},
				}},
			},
		})
	}
}

// BenchmarkFullComputation: every endpoint of the cluster (node ""), from
// nothing. The budget is < 2 s of agent CPU per node.
func BenchmarkFullComputation(b *testing.B) {
	for b.Loop() {
		eng := policy.NewEngine(identity.NewMemory(identity.MinCluster).Identity, "")
		scale(eng)
		eng.Changes()
		b.ReportMetric(float64(eng.Stats.EndpointComputations), "endpoints/op")
	}
}

// BenchmarkLabelChange: one pod's label flips between two values on a
// computed cluster; the cost of one change, recomputation included.
func BenchmarkLabelChange(b *testing.B) { benchLabelChange(b, scale) }

// benchLabelChange flips a pod's label in the cluster build makes.
func benchLabelChange(b *testing.B, build func(*policy.Engine)) {
	eng := policy.NewEngine(identity.NewMemory(identity.MinCluster).Identity, "")
	build(eng)
	eng.Changes()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "fp-ns3", Name: "p3"},
		Spec:       corev1.PodSpec{NodeName: "node3"},
		Status:     corev1.PodStatus{PodIP: "10.0.0.4", PodIPs: []corev1.PodIP{{IP: "10.0.0.4"}}},
	}
	i := 0
	before := eng.Stats.EndpointComputations
	for b.Loop() {
		i++
		p.Labels = map[string]string{"app": fmt.Sprint("app", i%2)}
		eng.UpsertPod(p)
		eng.Changes()
	}
	b.ReportMetric(float64(eng.Stats.EndpointComputations-before)/float64(i), "endpoints/op")
}
