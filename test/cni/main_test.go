// Package cni tests fastpath-cni the way a container runtime uses it: the
// real plugin binary executed by libcni with the conflist the real agent
// installed, from a thread in the node's network namespace, against pod
// network namespaces with real veths, and the real portmap and bandwidth
// plugins chained after it.
package cni

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// bin holds fastpath-agent, fastpath-cni, fastpathctl, portmap and
// bandwidth, built once for the package.
var bin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		fmt.Println("test/cni: skipped in -short mode")
		return 0
	}
	dir, err := os.MkdirTemp("", "fp-cni-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// portmap and bandwidth come from go.mod's tool block, at the version
	// pinned there: the plugins a node would really chain.
	pkgs := []string{
		"../../cmd/fastpath-agent", "../../cmd/fastpath-cni", "../../cmd/fastpathctl",
		"github.com/containernetworking/plugins/plugins/meta/portmap",
		"github.com/containernetworking/plugins/plugins/meta/bandwidth",
	}
	out, err := exec.Command("go", append([]string{"build", "-o", dir + "/"}, pkgs...)...).CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		return 1
	}
	bin, _ = filepath.Abs(dir)
	return m.Run()
}
