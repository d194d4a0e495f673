package identity

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
)

// ErrExhausted means every cluster identity number is taken.
var ErrExhausted = errors.New("identity: no free identity number")

// Allocator finds or creates the identity of a label set. Agents racing on
// the same labels converge on one number without a lock:
//
//  1. an existing identity with these labels (found by HashLabel) wins,
//     the lowest number if there are several;
//  2. otherwise each agent creates at the same deterministic sequence of
//     numbers (Start, Start+1, ...), so racers collide on one name, the
//     apiserver lets exactly one Create through, and the others read it
//     back and adopt it when its labels are theirs;
//  3. after creating, the agent lists again: if a lower number with the
//     same labels appeared meanwhile (possible only when a GC deletion
//     opened a hole in the sequence during the race), it deletes its own
//     (UID precondition) and adopts the lower one. All racers pick the
//     lowest, so they agree.
type Allocator struct {
	Client dynamic.Interface
	// Start is the first number tried; default a hash of the labels over
	// the cluster range. Tests set a constant to force collisions.
	Start func(Labels) ID
	// TouchAfter: adopting an identity whose last use is older than this
	// refreshes LastUsedAnnotation (one write per identity per interval),
	// which invalidates a GC's judgement of it. Keep it below GC.Grace/2.
	TouchAfter time.Duration
	Now        func() time.Time
}

func (a *Allocator) res() dynamic.ResourceInterface { return a.Client.Resource(GVR) }

func (a *Allocator) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

// DefaultStart spreads label sets over the cluster range.
func DefaultStart(l Labels) ID {
	sum := sha256.Sum256([]byte(l.String()))
	span := uint32(MaxCluster - MinCluster + 1)
	return MinCluster + ID(binary.BigEndian.Uint32(sum[:4])%span)
}

// Allocate returns the identity of l, creating it if no identity has
// these labels.
func (a *Allocator) Allocate(ctx context.Context, l Labels) (ID, error) {
	if err := l.Validate(); err != nil {
		return 0, err
	}
	if o, ok, err := a.Lookup(ctx, l); err != nil || ok {
		if ok {
			a.touch(ctx, o)
		}
		return o.ID, err
	}
	start := DefaultStart(l)
	if a.Start != nil {
		start = a.Start(l)
	}
	span := int(MaxCluster - MinCluster + 1)
	retries := 0
	for i := 0; i < span; i++ {
		id := MinCluster + (start-MinCluster+ID(i))%ID(span)
		created, err := a.res().Create(ctx, newObject(id, l), metav1.CreateOptions{})
		if err == nil {
			return a.settle(ctx, l, id, created.GetUID())
		}
		if !apierrors.IsAlreadyExists(err) {
			return 0, fmt.Errorf("create FastpathIdentity %d: %w", id, err)
		}
		u, err := a.res().Get(ctx, strconv.FormatUint(uint64(id), 10), metav1.GetOptions{})
		if apierrors.IsNotFound(err) && retries < 3 {
			// Deleted between our Create and Get: the number is free again.
			retries++
			i--
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("get FastpathIdentity %d: %w", id, err)
		}
		o, err := ParseObject(u)
		if err != nil {
			continue
		}
		if o.Labels.Equal(l) && !o.Deleting {
			return a.settle(ctx, l, id, "")
		}
	}
	return 0, ErrExhausted
}

// settle applies step 3: the lowest identity with labels l wins; if ours
// (uid non-empty) is not it, ours goes.
func (a *Allocator) settle(ctx context.Context, l Labels, id ID, uid types.UID) (ID, error) {
	o, ok, err := a.Lookup(ctx, l)
	if err != nil {
		return 0, err
	}
	if !ok || o.ID >= id {
		return id, nil
	}
	if uid != "" {
		err := a.res().Delete(ctx, strconv.FormatUint(uint64(id), 10), metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return 0, fmt.Errorf("delete duplicate FastpathIdentity %d: %w", id, err)
		}
	}
	return o.ID, nil
}

// Lookup returns the lowest live identity with labels l, if any.
func (a *Allocator) Lookup(ctx context.Context, l Labels) (Object, bool, error) {
	list, err := a.res().List(ctx, metav1.ListOptions{LabelSelector: HashLabel + "=" + l.Hash()})
	if err != nil {
		return Object{}, false, fmt.Errorf("list FastpathIdentities: %w", err)
	}
	var found []Object
	for i := range list.Items {
		o, err := ParseObject(&list.Items[i])
		if err == nil && !o.Deleting && o.Labels.Equal(l) {
			found = append(found, o)
		}
	}
	if len(found) == 0 {
		return Object{}, false, nil
	}
	return slices.MinFunc(found, func(x, y Object) int { return int(x.ID) - int(y.ID) }), true, nil
}

// touch refreshes LastUsedAnnotation when it is older than TouchAfter. A
// failure is harmless: the GC's grace period still covers informer lag.
func (a *Allocator) touch(ctx context.Context, o Object) {
	if a.TouchAfter <= 0 || a.now().Sub(o.LastUsed.Time) < a.TouchAfter {
		return
	}
	ts, _ := metav1.NewTime(a.now()).MarshalQueryParameter()
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, LastUsedAnnotation, ts)
	_, _ = a.res().Patch(ctx, strconv.FormatUint(uint64(o.ID), 10), types.MergePatchType, []byte(patch), metav1.PatchOptions{})
}

// Restore brings back an identity this agent's endpoints use after it was
// deleted (a GC on another node judged it unused, its pods not yet in that
// node's cache for the whole grace period). It re-creates the same number
// when free, so the datapath keeps its entries; if another label set took
// the number meanwhile, it allocates anew and the caller re-identifies.
func (a *Allocator) Restore(ctx context.Context, id ID, l Labels) (ID, error) {
	if err := l.Validate(); err != nil {
		return 0, err
	}
	if o, ok, err := a.Lookup(ctx, l); err != nil || ok {
		return o.ID, err
	}
	created, err := a.res().Create(ctx, newObject(id, l), metav1.CreateOptions{})
	switch {
	case err == nil:
		return a.settle(ctx, l, id, created.GetUID())
	case apierrors.IsAlreadyExists(err):
		return a.Allocate(ctx, l)
	}
	return 0, fmt.Errorf("re-create FastpathIdentity %d: %w", id, err)
}
