package testenv

import (
	"errors"
	"os"
	"sort"
	"testing"
)

// RequirePrivilegedEnv, set to 1, turns every skip for missing binaries or
// missing root into a failure, so CI cannot pass by skipping.
const RequirePrivilegedEnv = "FASTPATH_REQUIRE_PRIVILEGED"

// StartForTest starts an env for t and stops it in t.Cleanup. Without the
// binaries or without root it skips t, loudly, unless
// FASTPATH_REQUIRE_PRIVILEGED=1, where it fails t instead.
func StartForTest(t testing.TB, opts Options) *Env {
	t.Helper()
	env, err := Start(t.Context(), opts)
	switch {
	case errors.Is(err, ErrNoBinaries):
		skipOrFail(t, "no Kubernetes control-plane binaries. "+
			"Run `make k8s-tools` (tools/build-k8s.sh) or set "+BinEnv+". ("+err.Error()+")")
	case errors.Is(err, errNotRoot):
		skipOrFail(t, err.Error()+"; run the tests as root.")
	case err != nil:
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			logTails(t, env)
		}
		if err := env.Stop(); err != nil {
			t.Errorf("testenv stop: %v", err)
		}
	})
	return env
}

func skipOrFail(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv(RequirePrivilegedEnv) == "1" {
		t.Fatalf("!!! FAILING (%s=1): %s", RequirePrivilegedEnv, msg)
	}
	t.Skip("!!! SKIPPING: " + msg)
}

// logTails shows the children's logs before Stop deletes them.
func logTails(t testing.TB, env *Env) {
	paths := env.LogPaths()
	names := make([]string, 0, len(paths))
	for name := range paths {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		t.Logf("--- last lines of %s ---\n%s", name, logTail(paths[name], 30))
	}
}
