package lbipam

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
)

// Pool condition types.
const (
	PoolReady    = "Ready"    // False: the pool cannot be read (message names the field)
	PoolConflict = "Conflict" // True: it overlaps an older pool (named) and gives no new address
)

type poolStatus struct {
	Used       int64              `json:"used"`
	Available  string             `json:"available"`
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// writePoolStatuses writes each pool's counts and conditions where they
// changed.
func (c *Controller) writePoolStatuses(ctx context.Context) error {
	objs, err := c.pools.List(labels.Everything())
	if err != nil {
		return err
	}
	var first error
	for _, o := range objs {
		u := o.(*unstructured.Unstructured)
		if err := c.writePoolStatus(ctx, u); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (c *Controller) writePoolStatus(ctx context.Context, u *unstructured.Unstructured) error {
	var old poolStatus
	if raw, ok, _ := unstructured.NestedMap(u.Object, "status"); ok {
		_ = runtime.DefaultUnstructuredConverter.FromUnstructured(raw, &old)
	}
	st := poolStatus{Conditions: append([]metav1.Condition(nil), old.Conditions...), Available: "0"}
	gen := u.GetGeneration()
	p, perr := ParsePool(u)
	if perr != nil {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: PoolReady, Status: metav1.ConditionFalse, Reason: "InvalidSpec", Message: perr.Error(), ObservedGeneration: gen})
		meta.RemoveStatusCondition(&st.Conditions, PoolConflict)
	} else {
		used, avail := c.alloc.Usage(p)
		st.Used, st.Available = used, avail.String()
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: PoolReady, Status: metav1.ConditionTrue, Reason: "Valid", Message: "blocks and serviceSelector are valid", ObservedGeneration: gen})
		if other := c.alloc.Conflict(p.Name); other != "" {
			meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: PoolConflict, Status: metav1.ConditionTrue, Reason: "Overlap",
				Message: fmt.Sprintf("overlaps the older pool %s; this pool gives out no new address until the overlap is gone", other), ObservedGeneration: gen})
		} else {
			meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: PoolConflict, Status: metav1.ConditionFalse, Reason: "NoOverlap", Message: "overlaps no other pool", ObservedGeneration: gen})
		}
	}
	if sameStatus(&old, &st) {
		return nil
	}
	raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&st)
	if err != nil {
		return err
	}
	out := u.DeepCopy()
	out.Object["status"] = raw
	_, err = c.dyn.Resource(PoolGVR).UpdateStatus(ctx, out, metav1.UpdateOptions{FieldManager: Component})
	return err
}

func sameStatus(a, b *poolStatus) bool {
	if a.Used != b.Used || a.Available != b.Available || len(a.Conditions) != len(b.Conditions) {
		return false
	}
	for i := range a.Conditions {
		if !sameCondition(&a.Conditions[i], meta.FindStatusCondition(b.Conditions, a.Conditions[i].Type)) {
			return false
		}
	}
	return true
}
