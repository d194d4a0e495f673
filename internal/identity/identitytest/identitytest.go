// Package identitytest installs the FastpathIdentity CRD of deploy/crds
// into a test apiserver (internal/testenv) or the lab, for tests of the packages that
// use identities.
package identitytest

import (
	"context"
	"path/filepath"
	"runtime"
	"testing"

	"k8s.io/client-go/dynamic"

	"github.com/fastpath-net/fastpath/internal/identity"
	"github.com/fastpath-net/fastpath/internal/testenv"
)

// CRDPath is deploy/crds/fastpathidentities.yaml of this checkout.
func CRDPath() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "deploy", "crds", "fastpathidentities.yaml")
}

// InstallCRD creates the CRD and waits until FastpathIdentities are served.
func InstallCRD(t testing.TB, dyn dynamic.Interface) {
	t.Helper()
	testenv.InstallCRD(t, dyn, CRDPath(), identity.GVR)
}

// Install is InstallCRD returning its error, for the lab.
func Install(ctx context.Context, dyn dynamic.Interface) error {
	return testenv.ApplyCRD(ctx, dyn, CRDPath(), identity.GVR)
}
