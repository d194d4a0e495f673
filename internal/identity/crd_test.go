package identity_test

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/fastpath-net/fastpath/internal/identity"
	"github.com/fastpath-net/fastpath/internal/identity/identitytest"
	"github.com/fastpath-net/fastpath/internal/testenv"
)

// startWithCRD starts a real apiserver, installs deploy/crds and returns a
// dynamic client once the CRD serves.
func startWithCRD(t *testing.T) dynamic.Interface {
	t.Helper()
	env := testenv.StartForTest(t, testenv.Options{NoControllerManager: true})
	dyn, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	identitytest.InstallCRD(t, dyn)
	return dyn
}

func create(ctx context.Context, dyn dynamic.Interface, doc string) error {
	var obj map[string]any
	if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
		return err
	}
	_, err := dyn.Resource(identity.GVR).Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{})
	return err
}
