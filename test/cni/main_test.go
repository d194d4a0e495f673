// Package cni tests fastpath-cni the way a container runtime uses it: the
// real plugin binary executed by libcni with the conflist the real agent
// installed, from a thread in the node's network namespace, against pod
// network namespaces with real veths, and the real portmap and bandwidth
// plugins chained after it.
package cni

import (
	"os"
	"testing"

	"github.com/fastpath-net/fastpath/test/internal/testbin"
)

// bin holds fastpath-agent, fastpath-cni, fastpathctl, portmap and
// bandwidth, built once for the package.
var bin string

func TestMain(m *testing.M) {
	// portmap and bandwidth come from go.mod's tool block, at the version
	// pinned there: the plugins a node would really chain.
	os.Exit(testbin.Main(m, &bin, "./cmd/fastpath-agent", "./cmd/fastpath-cni", "./cmd/fastpathctl",
		"github.com/containernetworking/plugins/plugins/meta/portmap",
		"github.com/containernetworking/plugins/plugins/meta/bandwidth"))
}
