package identity_test

import (
	"context"
	"os"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/fastpath-net/fastpath/internal/testenv"
)

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// startWithCRD starts a real apiserver, installs deploy/crds and returns a
// dynamic client once the CRD serves.
func startWithCRD(t *testing.T) dynamic.Interface {
	t.Helper()
	env := testenv.StartForTest(t, testenv.Options{NoControllerManager: true})
	dyn, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	InstallCRD(t, dyn)
	return dyn
}

// InstallCRD creates the FastpathIdentity CRD from deploy/crds and waits
// until it is Established.
func InstallCRD(t *testing.T, dyn dynamic.Interface) {
	t.Helper()
	raw, err := os.ReadFile("../../deploy/crds/fastpathidentities.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]any
	if err := yaml.Unmarshal(raw, &obj); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	u := &unstructured.Unstructured{Object: obj}
	if _, err := dyn.Resource(crdGVR).Create(ctx, u, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create CRD: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		got, err := dyn.Resource(crdGVR).Get(ctx, u.GetName(), metav1.GetOptions{})
		if err == nil && established(got) {
			// Established can precede the storage being served by a moment.
			if _, err := dyn.Resource(identityGVR()).List(ctx, metav1.ListOptions{}); err == nil {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("CRD not established after 30s")
}

func established(u *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Established" && m["status"] == "True" {
			return true
		}
	}
	return false
}

func create(ctx context.Context, dyn dynamic.Interface, doc string) error {
	var obj map[string]any
	if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
		return err
	}
	_, err := dyn.Resource(identityGVR()).Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{})
	return err
}
