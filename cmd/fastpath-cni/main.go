// Command fastpath-cni is fastpath's CNI plugin (spec 1.1.0: ADD, DEL,
// CHECK, STATUS, GC, VERSION). It is a thin client of the fastpath agent on
// the same node: each verb is one request on the agent's unix socket
// (internal/cniapi), and the agent does the work (docs/architecture.md,
// "Pod networking").
//
// `fastpath-cni install DIR` copies the plugin into DIR (the node's CNI bin
// directory), as the DaemonSet's init container does.
//
// How a runtime, the lab or a test uses it:
//
//	fastpath-agent --netns <node netns> --cni-socket /run/fastpath/cni.sock \
//	    --cni-conf-dir /etc/cni/net.d --cni-state-dir /var/lib/fastpath/cni \
//	    --pod-cidr 10.244.1.0/24            # or --kubeconfig + --node-name: Node.spec.podCIDRs
//	    [--cni-mtu 1450] [--cni-chained-plugins portmap,bandwidth] ...
//
// The agent writes <conf dir>/10-fastpath.conflist once its API answers.
// Run libcni (or any runtime) with that conflist and CNI_PATH holding
// fastpath-cni (and the chained plugins), from a thread or process in the
// node's network namespace: host veths, portmap rules and bandwidth's ifb
// are made in the namespace the plugins run in. `fastpathctl endpoint list`
// shows the attached pods.
package main

import (
	"fmt"
	"os"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/fastpath-net/fastpath/internal/cni"
)

func main() {
	// A runtime always sets CNI_COMMAND; without it, `install DIR` is the
	// DaemonSet's init container.
	if len(os.Args) == 3 && os.Args[1] == "install" && os.Getenv("CNI_COMMAND") == "" {
		if err := install(os.Args[2]); err != nil {
			fmt.Fprintf(os.Stderr, "fastpath-cni install: %v\n", err)
			os.Exit(1)
		}
		return
	}
	skel.PluginMainFuncs(cni.Funcs(), cni.Versions, cni.About)
}
