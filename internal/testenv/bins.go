package testenv

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

const modulePath = "github.com/fastpath-net/fastpath"

// BinEnv names the variable that points at a directory holding the
// control-plane binaries, overriding the repo's tools/bin.
const BinEnv = "FASTPATH_K8S_BIN"

// ErrNoBinaries means the control-plane binaries have not been built.
var ErrNoBinaries = errors.New("control-plane binaries not found")

// requiredBins are what Start runs; kube-proxy and kubectl are built
// alongside for the lab but are not needed here.
var requiredBins = []string{"etcd", "kube-apiserver", "kube-controller-manager"}

// BinDir returns the directory of the control-plane binaries:
// $FASTPATH_K8S_BIN, else tools/bin of the repo containing the working
// directory.
func BinDir() (string, error) {
	if dir := os.Getenv(BinEnv); dir != "" {
		return dir, nil
	}
	root, err := repoRoot()
	if err != nil {
		return "", fmt.Errorf("%w: %s unset and %v", ErrNoBinaries, BinEnv, err)
	}
	return filepath.Join(root, "tools", "bin"), nil
}

// Binary returns the path of one built binary (e.g. "kube-proxy", "kubectl").
func Binary(name string) (string, error) {
	dir, err := BinDir()
	if err != nil {
		return "", err
	}
	return binaryIn(dir, name)
}

func binaryIn(dir, name string) (string, error) {
	path := filepath.Join(dir, name)
	if st, err := os.Stat(path); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("%w: no executable %s (run `make k8s-tools` or tools/build-k8s.sh)", ErrNoBinaries, path)
	}
	return path, nil
}

// repoRoot walks up from the working directory to the go.mod of our module;
// nested modules such as tools/k8s have their own go.mod and are passed over.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if moduleOf(filepath.Join(dir, "go.mod")) == modulePath {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of %s above the working directory", modulePath)
		}
		dir = parent
	}
}

func moduleOf(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(s.Text()), "module "); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`)
		}
	}
	return ""
}
