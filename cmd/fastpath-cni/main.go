// Command fastpath-cni is fastpath's CNI plugin (spec 1.1.0). The container
// runtime executes it with the configuration the agent installs
// (--cni-conf-dir, file 10-fastpath.conflist); it forwards each verb to the
// agent over the unix socket named in that configuration.
//
// How to run it by hand or from a test (what the lab does):
//
//	fastpath-agent ... --cni-socket /run/fastpath/cni.sock --cni-conf-dir /etc/cni/net.d \
//	    --pod-cidr 10.244.1.0/24        # or --kubeconfig: Node.spec.podCIDRs
//	# then libcni with that conflist and CNI_PATH holding fastpath-cni,
//	# run from a thread in the node's network namespace (host veths go there).
package main

import (
	"github.com/containernetworking/cni/pkg/skel"

	"github.com/fastpath-net/fastpath/internal/cni"
)

func main() {
	skel.PluginMainFuncs(cni.Funcs(), cni.Versions, cni.About)
}
