package policy

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/fastpath-net/fastpath/internal/identity"
)

// LoadCluster builds an Engine (every pod an endpoint) from one snapshot of
// a cluster: namespaces, pods, NetworkPolicies, and the FastpathIdentity
// objects so that label sets keep the numbers the agents gave them (label
// sets without one, e.g. without agents, are numbered from the first free
// cluster number). dyn may be nil.
func LoadCluster(ctx context.Context, cs kubernetes.Interface, dyn dynamic.Interface) (*Engine, error) {
	ids := identity.NewMemory(identity.MinCluster)
	if dyn != nil {
		list, err := dyn.Resource(identity.GVR).List(ctx, metav1.ListOptions{})
		switch {
		case err == nil:
			for i := range list.Items {
				if o, err := identity.ParseObject(&list.Items[i]); err == nil && !o.Deleting {
					ids.Set(o.Labels, o.ID)
				}
			}
		case apierrors.IsNotFound(err):
			// The CRD is not installed: local numbers only.
		default:
			return nil, fmt.Errorf("list FastpathIdentities: %w", err)
		}
	}
	eng := NewEngine(ids.Identity, "")
	nss, err := cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	for i := range nss.Items {
		eng.UpsertNamespace(&nss.Items[i])
	}
	pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	for i := range pods.Items {
		eng.UpsertPod(&pods.Items[i])
	}
	nps, err := cs.NetworkingV1().NetworkPolicies("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list networkpolicies: %w", err)
	}
	for i := range nps.Items {
		eng.UpsertPolicy(&nps.Items[i])
	}
	eng.Changes()
	return eng, nil
}
