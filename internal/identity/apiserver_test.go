package identity_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/fastpath-net/fastpath/internal/identity"
)

// TestOnAPIServer shares one real apiserver among the CRD, allocator and
// GC cases (a start costs seconds on this machine).
func TestOnAPIServer(t *testing.T) {
	dyn := startWithCRD(t)
	t.Run("CRDValidation", func(t *testing.T) { testCRDValidation(t, dyn) })
	t.Run("AllocatorRace", func(t *testing.T) { testAllocatorRace(t, dyn) })
	t.Run("GC", func(t *testing.T) { testGC(t, dyn) })
	t.Run("Restore", func(t *testing.T) { testRestore(t, dyn) })
}

func testCRDValidation(t *testing.T, dyn dynamic.Interface) {
	ctx := t.Context()
	ok := `{"apiVersion":"fastpath.io/v1alpha1","kind":"FastpathIdentity","metadata":{"name":"%s"},"securityLabels":%s}`
	good := `{"k8s:app":"a","k8s:io.kubernetes.pod.namespace":"fp-x","k8s:io.kubernetes.pod.namespace.labels.team":"t"}`
	for _, c := range []struct{ name, labels, wantErr string }{
		{"300", good, ""},
		{"255", good, "256-65535"},
		{"65536", good, "256-65535"},
		{"0300", good, "256-65535"},
		{"web", good, "256-65535"},
		{"301", `{"app":"a","k8s:io.kubernetes.pod.namespace":"x"}`, "starts with k8s:"},
		{"302", `{"k8s:app":"a"}`, "must name the namespace"},
		{"303", `{"k8s:io.kubernetes.pod.namespacex":"a","k8s:io.kubernetes.pod.namespace":"x"}`, "namespace prefix"},
		{"304", `{}`, "securityLabels"},
		{"305", `{"k8s:app":"` + strings.Repeat("v", 64) + `","k8s:io.kubernetes.pod.namespace":"x"}`, "63"},
	} {
		err := create(ctx, dyn, fmt.Sprintf(ok, c.name, c.labels))
		switch {
		case c.wantErr == "" && err != nil:
			t.Errorf("%s: rejected: %v", c.name, err)
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
			t.Errorf("%s %s: err = %v, want one mentioning %q", c.name, c.labels, err, c.wantErr)
		}
	}
	// Labels are immutable; other metadata is not.
	patch := `{"securityLabels":{"k8s:app":"b"}}`
	_, err := dyn.Resource(identity.GVR).Patch(ctx, "300", types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	if err == nil || !strings.Contains(err.Error(), "immutable") {
		t.Errorf("changing securityLabels: err = %v, want immutable", err)
	}
	_, err = dyn.Resource(identity.GVR).Patch(ctx, "300", types.MergePatchType, []byte(`{"metadata":{"annotations":{"x":"y"}}}`), metav1.PatchOptions{})
	if err != nil {
		t.Errorf("annotating: %v", err)
	}
	if err := dyn.Resource(identity.GVR).Delete(ctx, "300", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

func labelSet(i int) identity.Labels {
	return identity.ForPod("fp-race", map[string]string{"team": "t"}, map[string]string{"app": fmt.Sprint("a", i)})
}

// testAllocatorRace: two allocators (two agents) allocate the same 15 label
// sets concurrently, in different orders, with every label set starting
// at the same number so that they fight over every name. Each label set
// must end with exactly one identity, and both agents must have been told
// the same number.
func testAllocatorRace(t *testing.T, dyn dynamic.Interface) {
	ctx := t.Context()
	const sets = 15
	collide := func(identity.Labels) identity.ID { return 1000 }
	agents := []*identity.Allocator{{Client: dyn, Start: collide}, {Client: dyn, Start: collide}}
	got := make([][sets]identity.ID, len(agents))
	var wg sync.WaitGroup
	errs := make(chan error, len(agents)*sets)
	for a, alloc := range agents {
		order := rand.Perm(sets)
		for w := range 3 { // three workers per agent, as pods start in parallel
			wg.Go(func() {
				for j := w; j < sets; j += 3 {
					i := order[j]
					id, err := alloc.Allocate(ctx, labelSet(i))
					if err != nil {
						errs <- err
						return
					}
					got[a][i] = id
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	list, err := dyn.Resource(identity.GVR).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	byLabels := map[string][]string{}
	for _, u := range list.Items {
		sl, _, _ := unstructuredLabels(u.Object)
		byLabels[sl] = append(byLabels[sl], u.GetName())
	}
	for i := range sets {
		l := labelSet(i)
		if got[0][i] != got[1][i] {
			t.Errorf("label set %d: agents disagree: %d vs %d", i, got[0][i], got[1][i])
		}
		if names := byLabels[l.String()]; len(names) != 1 || names[0] != got[0][i].String() {
			t.Errorf("label set %d: identities in the API %v, agents got %d", i, names, got[0][i])
		}
		if got[0][i] < 1000 || got[0][i] >= 1000+sets {
			t.Errorf("label set %d: identity %d outside the probed run 1000-%d", i, got[0][i], 1000+sets-1)
		}
	}
	// Asking again finds the existing identity and creates nothing.
	again, err := agents[1].Allocate(ctx, labelSet(3))
	if err != nil || again != got[0][3] {
		t.Errorf("re-allocate: %d, %v; want %d", again, err, got[0][3])
	}
	if l2, _ := dyn.Resource(identity.GVR).List(ctx, metav1.ListOptions{}); len(l2.Items) != len(list.Items) {
		t.Errorf("re-allocation created objects: %d -> %d", len(list.Items), len(l2.Items))
	}
	cleanup(t, dyn)
}

func unstructuredLabels(obj map[string]any) (string, bool, error) {
	raw, ok := obj["securityLabels"].(map[string]any)
	l := identity.Labels{}
	for k, v := range raw {
		l[k], _ = v.(string)
	}
	return l.String(), ok, nil
}

func cleanup(t *testing.T, dyn dynamic.Interface) {
	if err := dyn.Resource(identity.GVR).DeleteCollection(context.Background(), metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
		t.Errorf("cleanup: %v", err)
	}
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// testGC: unused identities go after the grace period, used ones stay, a
// duplicate goes, and an identity adopted (touched) or re-created between
// the GC's look and its delete survives.
func testGC(t *testing.T, dyn dynamic.Interface) {
	ctx := t.Context()
	// The objects' creationTimestamp is real time; start the fake clock an
	// hour ahead so "older than Grace" holds, then move it by hand.
	clk := &clock{t: time.Now().Add(time.Hour)}
	alloc := &identity.Allocator{Client: dyn, Now: clk.now, TouchAfter: 10 * time.Second}
	used, unused, adopted := labelSet(100), labelSet(101), labelSet(102)
	ids := map[string]identity.ID{}
	for _, l := range []identity.Labels{used, unused, adopted} {
		id, err := alloc.Allocate(ctx, l)
		if err != nil {
			t.Fatal(err)
		}
		ids[l.String()] = id
	}
	// A leftover duplicate of `used` (an agent that crashed before settling).
	dupID := identity.ID(65000)
	dup := fmt.Sprintf(`{"apiVersion":"fastpath.io/v1alpha1","kind":"FastpathIdentity","metadata":{"name":"%d","labels":{%q:%q}},"securityLabels":{"k8s:app":"a100","k8s:io.kubernetes.pod.namespace":"fp-race","k8s:io.kubernetes.pod.namespace.labels.team":"t"}}`,
		dupID, identity.HashLabel, used.Hash())
	if err := create(ctx, dyn, dup); err != nil {
		t.Fatal(err)
	}
	gc := &identity.GC{Client: dyn, Grace: time.Minute, Now: clk.now,
		InUse: func(l identity.Labels) bool { return l.Equal(used) }}
	sweep := func() []identity.ID {
		t.Helper()
		d, err := gc.Sweep(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if d := sweep(); len(d) != 0 {
		t.Fatalf("first sweep deleted %v: nothing has been unused for the grace period yet", d)
	}
	clk.t = clk.t.Add(30 * time.Second)
	if d := sweep(); len(d) != 0 {
		t.Fatalf("sweep at half the grace period deleted %v", d)
	}
	// An agent adopts `adopted` now: the touch changes its resourceVersion.
	if id, err := alloc.Allocate(ctx, adopted); err != nil || id != ids[adopted.String()] {
		t.Fatalf("adopt: %d %v", id, err)
	}
	clk.t = clk.t.Add(31 * time.Second)
	d := sweep()
	want := map[identity.ID]bool{ids[unused.String()]: true, dupID: true}
	if len(d) != len(want) || !want[d[0]] || !want[d[len(d)-1]] {
		t.Fatalf("sweep after grace deleted %v, want the unused %d and the duplicate %d", d, ids[unused.String()], dupID)
	}
	for _, l := range []identity.Labels{used, adopted} {
		if _, ok, _ := alloc.Lookup(ctx, l); !ok {
			t.Errorf("%s deleted", l)
		}
	}
	// `adopted` is judged again from its touch: gone one grace period later.
	clk.t = clk.t.Add(time.Minute)
	if d := sweep(); len(d) != 1 || d[0] != ids[adopted.String()] {
		t.Fatalf("sweep one grace period after the touch deleted %v, want %d", d, ids[adopted.String()])
	}

	// Race: the GC judged an identity unused; meanwhile it was deleted and
	// re-created under the same number (new UID). The delete must not hit it.
	l := labelSet(103)
	id, err := alloc.Allocate(ctx, l)
	if err != nil {
		t.Fatal(err)
	}
	gc.InUse = func(x identity.Labels) bool { return !x.Equal(l) }
	if d := sweep(); len(d) != 0 {
		t.Fatalf("first look at %d deleted %v", id, d)
	}
	clk.t = clk.t.Add(2 * time.Minute)
	name := id.String()
	if err := dyn.Resource(identity.GVR).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := create(ctx, dyn, fmt.Sprintf(`{"apiVersion":"fastpath.io/v1alpha1","kind":"FastpathIdentity","metadata":{"name":%q,"labels":{%q:%q}},"securityLabels":{"k8s:app":"a103","k8s:io.kubernetes.pod.namespace":"fp-race","k8s:io.kubernetes.pod.namespace.labels.team":"t"}}`,
		name, identity.HashLabel, l.Hash())); err != nil {
		t.Fatal(err)
	}
	// The sweep judges the re-created object from scratch (new UID), so it
	// survives although the old one had been unused for the grace period.
	if d := sweep(); len(d) != 0 {
		t.Fatalf("sweep deleted the re-created identity: %v", d)
	}
	// The precondition itself: a stale resourceVersion is refused.
	cur, err := dyn.Resource(identity.GVR).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	uid, stale := cur.GetUID(), "1"
	err = dyn.Resource(identity.GVR).Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &stale}})
	if !apierrors.IsConflict(err) {
		t.Errorf("delete with a stale resourceVersion: %v, want Conflict", err)
	}
	cleanup(t, dyn)
}

// testRestore: an identity deleted under an agent's feet comes back with
// its number; if the number was taken by other labels meanwhile, the
// agent gets a new one.
func testRestore(t *testing.T, dyn dynamic.Interface) {
	ctx := t.Context()
	alloc := &identity.Allocator{Client: dyn}
	l := labelSet(200)
	id, err := alloc.Allocate(ctx, l)
	if err != nil {
		t.Fatal(err)
	}
	if err := dyn.Resource(identity.GVR).Delete(ctx, id.String(), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if got, err := alloc.Restore(ctx, id, l); err != nil || got != id {
		t.Fatalf("restore: %d %v, want %d", got, err, id)
	}
	if o, ok, err := alloc.Lookup(ctx, l); err != nil || !ok || o.ID != id {
		t.Fatalf("after restore: %+v %v %v", o, ok, err)
	}
	// Restoring what exists is a no-op.
	if got, err := alloc.Restore(ctx, id, l); err != nil || got != id {
		t.Fatalf("restore of a live identity: %d %v", got, err)
	}
	// The number taken by another label set meanwhile: a new number.
	if err := dyn.Resource(identity.GVR).Delete(ctx, id.String(), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	thief := &identity.Allocator{Client: dyn, Start: func(identity.Labels) identity.ID { return id }}
	if got, err := thief.Allocate(ctx, labelSet(201)); err != nil || got != id {
		t.Fatalf("thief: %d %v", got, err)
	}
	got, err := alloc.Restore(ctx, id, l)
	if err != nil || got == id || !got.IsCluster() {
		t.Fatalf("restore of a taken number: %d %v", got, err)
	}
	cleanup(t, dyn)
}
