package deploy

import (
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"github.com/fastpath-net/fastpath/internal/lbipam"
	"github.com/fastpath-net/fastpath/internal/testenv"
)

const operatorNS = "fp-deploy-lb"

// TestOperatorRunsUnderItsRBAC applies the pool CRD, deploy/operator's
// ServiceAccount and RBAC, and runs the real fastpath-operator (with
// leader election) holding only a token of that ServiceAccount: it must
// give a LoadBalancer Service an address from the example pool, write the
// pool's count, send an Event, and log no "forbidden".
func TestOperatorRunsUnderItsRBAC(t *testing.T) {
	env := testenv.StartForTest(t, testenv.Options{NoControllerManager: true})
	dyn, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	testenv.InstallCRD(t, dyn, filepath.Join(deployDir, "crds", "fastpathloadbalancerippools.yaml"), lbipam.PoolGVR)
	applyFiles(t, newApplier(t, env), "operator/serviceaccount.yaml", "operator/rbac.yaml", "operator/pool.example.yaml")
	admin := env.Clientset
	ctx := t.Context()
	kubeconfig := serviceAccountKubeconfig(t, env, "fastpath-operator")
	checkAccess(t, kubeconfig, operatorAccess)

	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: operatorNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	log := runBinary(t, "fastpath-operator", "--kubeconfig", kubeconfig, "--leader-elect-identity", "fp-deploy-operator", "--log-level", "debug")
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: operatorNS},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer,
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}},
	}
	if _, err := admin.CoreV1().Services(operatorNS).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, log, "web given 192.0.2.128, the pool counting it, an Event", func() bool {
		s, err := admin.CoreV1().Services(operatorNS).Get(ctx, "web", metav1.GetOptions{})
		if err != nil || len(s.Status.LoadBalancer.Ingress) != 1 || s.Status.LoadBalancer.Ingress[0].IP != "192.0.2.128" {
			return false
		}
		p, err := dyn.Resource(lbipam.PoolGVR).Get(ctx, "default", metav1.GetOptions{})
		if err != nil {
			return false
		}
		used, _, _ := unstructured.NestedInt64(p.Object, "status", "used")
		evs, err := admin.CoreV1().Events(operatorNS).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=web"})
		return err == nil && used == 1 && len(evs.Items) > 0
	})
	if strings.Contains(strings.ToLower(log.String()), "forbidden") {
		t.Errorf("the operator was refused something:\n%s", log)
	}
}

// operatorAccess: every call the operator makes, and a sample of what it
// never does.
var operatorAccess = []access{
	{ra{Resource: "services", Verb: "list"}, true},
	{ra{Resource: "services", Verb: "watch"}, true},
	{ra{Resource: "services", Subresource: "status", Verb: "update", Namespace: operatorNS}, true},
	{ra{Group: "fastpath.io", Resource: "fastpathloadbalancerippools", Verb: "list"}, true},
	{ra{Group: "fastpath.io", Resource: "fastpathloadbalancerippools", Verb: "watch"}, true},
	{ra{Group: "fastpath.io", Resource: "fastpathloadbalancerippools", Subresource: "status", Verb: "update"}, true},
	{ra{Resource: "events", Verb: "create", Namespace: operatorNS}, true},
	{ra{Resource: "events", Verb: "patch", Namespace: operatorNS}, true},
	{ra{Group: "coordination.k8s.io", Resource: "leases", Verb: "create", Namespace: saNamespace}, true},
	{ra{Group: "coordination.k8s.io", Resource: "leases", Verb: "update", Namespace: saNamespace, Name: "fastpath-lbipam"}, true},
	{ra{Group: "coordination.k8s.io", Resource: "leases", Verb: "update", Namespace: saNamespace, Name: "kube-controller-manager"}, false},
	{ra{Resource: "services", Verb: "update", Namespace: operatorNS}, false},
	{ra{Group: "fastpath.io", Resource: "fastpathloadbalancerippools", Verb: "update"}, false},
	{ra{Group: "fastpath.io", Resource: "fastpathloadbalancerippools", Verb: "delete"}, false},
	{ra{Resource: "secrets", Verb: "list"}, false},
	{ra{Resource: "pods", Verb: "list"}, false},
}
