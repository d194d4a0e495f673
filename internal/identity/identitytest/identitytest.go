// Package identitytest installs the FastpathIdentity CRD of deploy/crds
// into a test apiserver (internal/testenv), for tests of the packages that
// use identities.
package identitytest

import (
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
