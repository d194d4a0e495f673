package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/fastpath-net/fastpath/internal/identity"
	"github.com/fastpath-net/fastpath/internal/nettopo"
)

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// identityCRDPath is deploy/crds/fastpathidentities.yaml of the checkout
// the lab was built from (the lab runs where it was built).
func identityCRDPath() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "deploy", "crds", "fastpathidentities.yaml")
}

// installIdentityCRD creates the FastpathIdentity CRD, which the agents'
// --enable-policy needs, and waits until the apiserver serves it.
func installIdentityCRD(ctx context.Context) error {
	raw, err := os.ReadFile(identityCRDPath())
	if err != nil {
		return fmt.Errorf("FastpathIdentity CRD: %w", err)
	}
	var obj map[string]any
	if err := yaml.Unmarshal(raw, &obj); err != nil {
		return fmt.Errorf("FastpathIdentity CRD: %w", err)
	}
	dyn, ext, err := dynamicClient()
	if err != nil {
		return err
	}
	defer ext.Release()
	if _, err := dyn.Resource(crdGVR).Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create the FastpathIdentity CRD: %w", err)
	}
	for deadline := time.Now().Add(agentTimeout); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if _, err = dyn.Resource(identity.GVR).List(ctx, metav1.ListOptions{}); err == nil {
			return nil
		}
	}
	return fmt.Errorf("FastpathIdentities not served after %s: %w", agentTimeout, err)
}

// dynamicClient is client's dynamic twin, also dialing from the external
// client's namespace.
func dynamicClient() (dynamic.Interface, *nettopo.NS, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(StateDir, adminConfig))
	if err != nil {
		return nil, nil, err
	}
	ext, err := nettopo.OpenNS(extNSName())
	if err != nil {
		return nil, nil, err
	}
	cfg.Dial = nsDialer(ext)
	cfg.Proxy = nil
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		ext.Release()
		return nil, nil, err
	}
	return dyn, ext, nil
}
