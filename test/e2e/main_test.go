// Package e2e runs the real fastpath binaries against real packets in fp-
// network namespaces: a client, a node running the agent, and backends.
package e2e

import (
	"os"
	"testing"

	"github.com/fastpath-net/fastpath/test/internal/testbin"
)

// bin holds the binaries built once for the whole package.
var bin string

func TestMain(m *testing.M) {
	os.Exit(testbin.Main(m, &bin, "./cmd/fastpath-agent", "./cmd/fastpathctl"))
}
