// Package agentbin builds the fastpath-agent that a benchmark or the
// conformance test runs, from the module they run in.
package agentbin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Build builds cmd/fastpath-agent of this module into dir and returns its
// path.
func Build(ctx context.Context, dir string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the fastpath module: run from the repository")
	}
	bin := filepath.Join(dir, "fastpath-agent")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/fastpath-agent")
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/fastpath-agent: %w\n%s", err, out)
	}
	return bin, nil
}
