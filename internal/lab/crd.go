package lab

import (
	"context"

	"k8s.io/client-go/dynamic"

	"github.com/fastpath-net/fastpath/internal/identity/identitytest"
)

// installIdentityCRD creates the FastpathIdentity CRD of the checkout the
// lab was built from (the agents' --enable-policy needs it) and waits until
// the apiserver serves it.
func installIdentityCRD(ctx context.Context) error {
	cfg, ext, err := restConfig()
	if err != nil {
		return err
	}
	defer ext.Release()
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	return identitytest.Install(ctx, dyn)
}
