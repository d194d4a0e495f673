package testenv

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"
)

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// InstallCRD creates the CustomResourceDefinition in the YAML file at path
// and waits until its resource gvr is served.
func InstallCRD(t testing.TB, dyn dynamic.Interface, path string, gvr schema.GroupVersionResource) {
	t.Helper()
	if err := ApplyCRD(t.Context(), dyn, path, gvr); err != nil {
		t.Fatal(err)
	}
}

// ApplyCRD is InstallCRD returning its error (the lab installs CRDs too).
func ApplyCRD(ctx context.Context, dyn dynamic.Interface, path string, gvr schema.GroupVersionResource) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var obj map[string]any
	if err := yaml.Unmarshal(raw, &obj); err != nil {
		return fmt.Errorf("CRD %s: %w", path, err)
	}
	u := &unstructured.Unstructured{Object: obj}
	if _, err := dyn.Resource(crdGVR).Create(ctx, u, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create CRD %s: %w", path, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		got, err := dyn.Resource(crdGVR).Get(ctx, u.GetName(), metav1.GetOptions{})
		if err == nil && established(got) {
			// Established can precede the storage being served by a moment.
			if _, err := dyn.Resource(gvr).List(ctx, metav1.ListOptions{}); err == nil {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("CRD %s not established after 30s", u.GetName())
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
