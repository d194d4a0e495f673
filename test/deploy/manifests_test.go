// Package deploy checks deploy/ against a real kube-apiserver
// (internal/testenv): every manifest passes a server-side dry-run apply
// with strict field validation, and the real agent, holding only a token
// of the fastpath-agent ServiceAccount with the RBAC of deploy/agent,
// programs Services without a single "forbidden".
package deploy

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	"github.com/fastpath-net/fastpath/internal/testenv"
)

// deployDir is the repository's deploy/ directory.
const deployDir = "../../deploy"

// manifests reads every Kubernetes object under deploy/ (all YAML files
// but the standalone mode's services files, which are not objects).
func manifests(t *testing.T) map[string][]*unstructured.Unstructured {
	t.Helper()
	out := map[string][]*unstructured.Unstructured{}
	err := filepath.WalkDir(deployDir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "standalone" {
			return filepath.SkipDir
		}
		if d.IsDir() || (filepath.Ext(path) != ".yaml" && filepath.Ext(path) != ".yml") {
			return nil
		}
		objs, err := readObjects(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(deployDir, path)
		out[rel] = objs
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) < 4 {
		t.Fatalf("found only %d manifest files under %s", len(out), deployDir)
	}
	return out
}

func readObjects(path string) ([]*unstructured.Unstructured, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return objs, nil
		} else if err != nil {
			return nil, err
		}
		if len(m) > 0 {
			objs = append(objs, &unstructured.Unstructured{Object: m})
		}
	}
}

// applier applies objects by server-side apply.
type applier struct {
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
}

func newApplier(t *testing.T, env *testenv.Env) *applier {
	t.Helper()
	dc, err := discovery.NewDiscoveryClientForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	return &applier{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))}
}

// apply sends obj with server-side apply and strict field validation, so
// an unknown or misspelt field is an error, not silently dropped.
func (a *applier) apply(t *testing.T, obj *unstructured.Unstructured, dryRun bool) error {
	t.Helper()
	gvk := obj.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return err
	}
	data, err := obj.MarshalJSON()
	if err != nil {
		return err
	}
	opts := metav1.PatchOptions{FieldManager: "fastpath-deploy-test", FieldValidation: "Strict", Force: ptrTrue()}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	var ri dynamic.ResourceInterface = a.dyn.Resource(m.Resource)
	if ns := obj.GetNamespace(); ns != "" {
		ri = a.dyn.Resource(m.Resource).Namespace(ns)
	}
	_, err = ri.Patch(t.Context(), obj.GetName(), types.ApplyPatchType, data, opts)
	return err
}

func ptrTrue() *bool { b := true; return &b }

// TestManifestsServerSideDryRun applies every manifest with
// --dry-run=server semantics, after installing deploy/crds for real so
// that the example objects of our own kinds are checked by their schemas.
// Deliberately broken copies of the DaemonSet and the example pool must
// be refused, or the check would prove nothing.
func TestManifestsServerSideDryRun(t *testing.T) {
	env := testenv.StartForTest(t, testenv.Options{NoControllerManager: true})
	a := newApplier(t, env)
	all := manifests(t)
	installCRDs(t, env, all)
	a.mapper.Reset()
	var daemonSet, pool *unstructured.Unstructured
	for file, objs := range all {
		for _, obj := range objs {
			if err := a.apply(t, obj, true); err != nil {
				t.Errorf("%s: %s %s: server-side dry-run apply: %v", file, obj.GetKind(), obj.GetName(), err)
			}
			switch obj.GetKind() {
			case "DaemonSet":
				daemonSet = obj
			case "FastpathLoadBalancerIPPool":
				pool = obj
			}
		}
	}
	if daemonSet == nil || pool == nil {
		t.Fatalf("no DaemonSet (%v) or FastpathLoadBalancerIPPool (%v) under deploy/", daemonSet != nil, pool != nil)
	}
	broken := pool.DeepCopy()
	if err := unstructured.SetNestedSlice(broken.Object, []any{map[string]any{"start": "10.0.0.9", "stop": "10.0.0.1"}}, "spec", "blocks"); err != nil {
		t.Fatal(err)
	}
	if err := a.apply(t, broken, true); err == nil || !strings.Contains(err.Error(), "spec.blocks[0].stop") {
		t.Errorf("pool with stop < start: %v; want the apiserver to refuse it naming spec.blocks[0].stop", err)
	}
	for _, c := range []struct {
		path  []string
		value any
		want  string
	}{
		{[]string{"spec", "template", "spec", "hostNetwrk"}, true, "hostNetwrk"},              // misspelt field
		{[]string{"spec", "template", "spec", "dnsPolicy"}, "Sometimes", "Unsupported value"}, // invalid value
	} {
		broken := daemonSet.DeepCopy()
		if err := unstructured.SetNestedField(broken.Object, c.value, c.path...); err != nil {
			t.Fatal(err)
		}
		if err := a.apply(t, broken, true); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("DaemonSet with %s=%v: %v; want the apiserver to refuse it (%q)", strings.Join(c.path, "."), c.value, err, c.want)
		}
	}
}

// installCRDs creates every CustomResourceDefinition among objs and waits
// until each serves.
func installCRDs(t *testing.T, env *testenv.Env, all map[string][]*unstructured.Unstructured) {
	t.Helper()
	dyn, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	for file, objs := range all {
		for _, obj := range objs {
			if obj.GetKind() != "CustomResourceDefinition" {
				continue
			}
			group, _, _ := unstructured.NestedString(obj.Object, "spec", "group")
			plural, _, _ := unstructured.NestedString(obj.Object, "spec", "names", "plural")
			versions, _, _ := unstructured.NestedSlice(obj.Object, "spec", "versions")
			if len(versions) == 0 {
				t.Fatalf("%s: CRD %s has no versions", file, obj.GetName())
			}
			version, _ := versions[0].(map[string]any)["name"].(string)
			testenv.InstallCRD(t, dyn, filepath.Join(deployDir, file), schema.GroupVersionResource{Group: group, Version: version, Resource: plural})
		}
	}
}
