package conformance

import (
	"context"

	"github.com/fastpath-net/fastpath/internal/testenv"
)

// Proxy is one contender: something that turns Services and EndpointSlices
// into a node's datapath. The kube-proxy side and the fastpath side both
// implement it; the cases know nothing else about them.
type Proxy interface {
	// Name is the subtest name: "kube-proxy" or "fastpath".
	Name() string
	// Start runs the proxy for topo's node, fed by env's apiserver as the
	// Node nodeName, and returns once it runs (not once it has synced).
	Start(ctx context.Context, env *testenv.Env, topo *Topology, dir string) error
	// HasMarker reports whether the proxy has programmed the marker
	// frontend vip:port/TCP with exactly the backend markerIP:port. The
	// harness bumps the marker after every change of a case, so a proxy
	// showing the new marker has handled every change made before it.
	HasMarker(vip string, port int) (bool, error)
	// Frontends lists every programmed frontend as "addr:port/PROTO",
	// for cases that check what is (not) programmed.
	Frontends() ([]string, error)
	// Logs is the tail of the proxy's log, for failures.
	Logs() string
	// Stop ends the proxy and removes what it left outside topo's
	// namespaces. Safe to call twice.
	Stop() error
}
