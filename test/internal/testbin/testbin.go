// Package testbin builds the fastpath binaries that tests and benchmarks
// run, from the module they run in, so every test exercises the code of
// its own checkout rather than whatever is on the PATH.
package testbin

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Build builds cmd/fastpath-agent of this module into dir and returns its
// path.
func Build(ctx context.Context, dir string) (string, error) {
	if err := BuildInto(ctx, dir, "./cmd/fastpath-agent"); err != nil {
		return "", err
	}
	return filepath.Join(dir, "fastpath-agent"), nil
}

// BuildInto builds pkgs into dir, one binary each, named after the
// package. A package is a path relative to the module's root
// ("./cmd/fastpathctl") or an import path of a tool the module pins in
// go.mod (the CNI plugins a node chains).
func BuildInto(ctx context.Context, dir string, pkgs ...string) error {
	return BuildWith(ctx, dir, nil, pkgs...)
}

// BuildWith is BuildInto with extra `go build` flags (-ldflags, to build
// another version of the same code).
func BuildWith(ctx context.Context, dir string, flags []string, pkgs ...string) error {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return errors.New("not inside the fastpath module: run from the repository")
	}
	args := append(append([]string{"build", "-o", dir + "/"}, flags...), pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", strings.Join(pkgs, " "), err, out)
	}
	return nil
}

// Main is a test package's TestMain body: it builds pkgs once into a
// temporary directory, stores that directory in *dir, runs the tests and
// removes the directory. In -short mode it runs nothing: these packages
// drive real binaries against the kernel.
func Main(m *testing.M, dir *string, pkgs ...string) int {
	flag.Parse()
	if testing.Short() {
		fmt.Println("skipped in -short mode: the tests run the real binaries")
		return 0
	}
	tmp, err := os.MkdirTemp("", "fp-testbin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	if err := BuildInto(context.Background(), tmp, pkgs...); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	*dir = tmp
	return m.Run()
}
