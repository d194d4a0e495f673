// Package testpriv decides what a privileged test does on a machine that
// cannot run it: skip loudly on a developer's laptop, fail in CI, where
// FASTPATH_REQUIRE_PRIVILEGED=1 says a skip would hide a broken test.
package testpriv

import (
	"os"
	"testing"
)

// RequiredEnv is the variable CI sets to turn skips into failures.
const RequiredEnv = "FASTPATH_REQUIRE_PRIVILEGED"

// Required reports whether privileged tests must run.
func Required() bool { return os.Getenv(RequiredEnv) == "1" }

// Require skips (or fails, in CI) unless the test runs as root.
func Require(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "needs root (BPF, network namespaces)")
	}
}

// Unavailable skips or fails the test because something it needs is missing.
// why names the missing thing and how to get it.
func Unavailable(t testing.TB, why string) {
	t.Helper()
	if Required() {
		t.Fatalf("PRIVILEGED TEST CANNOT RUN (%s=1): %s", RequiredEnv, why)
	}
	t.Skipf("\n*** SKIPPED PRIVILEGED TEST %s: %s ***\n*** set %s=1 to make this a failure ***", t.Name(), why, RequiredEnv)
}
