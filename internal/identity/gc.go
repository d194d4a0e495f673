package identity

import (
	"context"
	"fmt"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
)

// GC deletes identities nobody uses. Every agent runs one; they need no
// coordination, because the decision depends only on cluster state and
// every deletion is conditional:
//
//   - an identity is a candidate when InUse says no pod has its labels, or
//     when a lower identity has the same labels (a leftover duplicate);
//   - it must stay a candidate, with the same UID and resourceVersion, for
//     Grace (longer than any informer lag: a pod just created elsewhere may
//     not be in this agent's cache yet), and be at least Grace old;
//   - the Delete carries UID and resourceVersion preconditions, so an
//     identity re-created under the same number, or adopted meanwhile (the
//     allocator's touch changes its resourceVersion), is not deleted.
//
// An agent whose identity was deleted anyway (its pod invisible to another
// agent for longer than Grace) sees the deletion in its informer and calls
// Allocator.Restore, which re-creates the same number when it is free.
type GC struct {
	Client dynamic.Interface
	Grace  time.Duration
	// InUse reports whether any pod in the cluster has these labels.
	InUse func(Labels) bool
	Now   func() time.Time

	seen map[string]candidate // by UID
}

type candidate struct {
	rv    string
	since time.Time
}

func (g *GC) now() time.Time {
	if g.Now != nil {
		return g.Now()
	}
	return time.Now()
}

// Sweep runs one pass and returns the identities it deleted.
func (g *GC) Sweep(ctx context.Context) ([]ID, error) {
	list, err := g.Client.Resource(GVR).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list FastpathIdentities: %w", err)
	}
	objs := make([]Object, 0, len(list.Items))
	lowest := map[string]ID{}
	for i := range list.Items {
		o, err := ParseObject(&list.Items[i])
		if err != nil || o.Deleting {
			continue
		}
		objs = append(objs, o)
		k := o.Labels.String()
		if cur, ok := lowest[k]; !ok || o.ID < cur {
			lowest[k] = o.ID
		}
	}
	now := g.now()
	next := make(map[string]candidate, len(g.seen))
	var deleted []ID
	for _, o := range objs {
		if lowest[o.Labels.String()] == o.ID && g.InUse(o.Labels) {
			continue
		}
		c, ok := g.seen[o.UID]
		if !ok || c.rv != o.ResourceVersion {
			c = candidate{rv: o.ResourceVersion, since: now}
		}
		if now.Sub(c.since) < g.Grace || now.Sub(o.Created.Time) < g.Grace {
			next[o.UID] = c
			continue
		}
		uid, rv := types.UID(o.UID), o.ResourceVersion
		err := g.Client.Resource(GVR).Delete(ctx, strconv.FormatUint(uint64(o.ID), 10),
			metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &rv}})
		switch {
		case err == nil:
			deleted = append(deleted, o.ID)
		case apierrors.IsNotFound(err), apierrors.IsConflict(err):
			// Gone already, or changed since we looked: judge it again.
		default:
			g.seen = next
			return deleted, fmt.Errorf("delete FastpathIdentity %d: %w", o.ID, err)
		}
	}
	g.seen = next
	return deleted, nil
}
