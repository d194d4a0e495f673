package lab

import (
	"context"
	"path/filepath"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/fastpath-net/fastpath/internal/fpnetpol"
	"github.com/fastpath-net/fastpath/internal/identity/identitytest"
	"github.com/fastpath-net/fastpath/internal/testenv"
)

// installCRDs creates the CRDs of the checkout the lab was built from
// (FastpathIdentity for --enable-policy, FastpathNetworkPolicy and its
// clusterwide kind for L7 policy), waits until the apiserver serves them,
// then installs the BGP peering CRD and the lab's peering policy.
func installCRDs(ctx context.Context) error {
	cfg, ext, err := restConfig()
	if err != nil {
		return err
	}
	defer ext.Release()
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	if err := identitytest.Install(ctx, dyn); err != nil {
		return err
	}
	// FastpathNetworkPolicy and its clusterwide kind (docs/l7.md).
	for _, c := range []struct {
		file string
		gvr  schema.GroupVersionResource
	}{{"fastpathnetworkpolicies.yaml", fpnetpol.PolicyGVR}, {"fastpathclusterwidenetworkpolicies.yaml", fpnetpol.ClusterwidePolicyGVR}} {
		if err := testenv.ApplyCRD(ctx, dyn, filepath.Join(filepath.Dir(identitytest.CRDPath()), c.file), c.gvr); err != nil {
			return err
		}
	}
	return createBGPPolicy(ctx, dyn)
}
