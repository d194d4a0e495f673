package identity

import (
	"fmt"
	"strconv"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GVR of FastpathIdentity (deploy/crds/fastpathidentities.yaml).
var GVR = schema.GroupVersionResource{Group: "fastpath.io", Version: "v1alpha1", Resource: "fastpathidentities"}

const (
	// HashLabel holds Labels.Hash, so an identity is found by its labels
	// with one label-selected list.
	HashLabel = "fastpath.io/labels-hash"
	// LastUsedAnnotation is refreshed by an allocator that adopts an
	// existing identity; the change of resourceVersion stops a GC that
	// judged it unused before (see GC).
	LastUsedAnnotation = "fastpath.io/last-used"
)

// Object is a FastpathIdentity as read from the API.
type Object struct {
	ID              ID
	Labels          Labels
	UID             string
	ResourceVersion string
	Created         metav1.Time
	Deleting        bool
	LastUsed        metav1.Time // zero when never adopted
}

func newObject(id ID, l Labels) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{}}
	u.SetAPIVersion(GVR.GroupVersion().String())
	u.SetKind("FastpathIdentity")
	u.SetName(strconv.FormatUint(uint64(id), 10))
	u.SetLabels(map[string]string{HashLabel: l.Hash()})
	sl := make(map[string]any, len(l))
	for k, v := range l {
		sl[k] = v
	}
	u.Object["securityLabels"] = sl
	return u
}

// ParseObject reads a FastpathIdentity, refusing a name outside the cluster range.
func ParseObject(u *unstructured.Unstructured) (Object, error) {
	n, err := strconv.ParseUint(u.GetName(), 10, 32)
	if err != nil || !ID(n).IsCluster() {
		return Object{}, fmt.Errorf("FastpathIdentity %q: metadata.name is not an identity number in %d-%d", u.GetName(), MinCluster, MaxCluster)
	}
	raw, _, err := unstructured.NestedStringMap(u.Object, "securityLabels")
	if err != nil {
		return Object{}, fmt.Errorf("FastpathIdentity %q: securityLabels: %w", u.GetName(), err)
	}
	o := Object{
		ID: ID(n), Labels: Labels(raw), UID: string(u.GetUID()),
		ResourceVersion: u.GetResourceVersion(), Created: u.GetCreationTimestamp(),
		Deleting: u.GetDeletionTimestamp() != nil,
	}
	if s := u.GetAnnotations()[LastUsedAnnotation]; s != "" {
		_ = o.LastUsed.UnmarshalQueryParameter(s)
	}
	return o, nil
}
