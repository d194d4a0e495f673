package lab

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/fastpath-net/fastpath/internal/cniserver"
	"github.com/fastpath-net/fastpath/internal/nettopo"
)

// pod is one demo pod: a network namespace on a node, attached by
// fastpath-cni.
type pod struct {
	name string
	app  string // "web" or "client"; "" for the policy truth table's pods
	node int    // 1-based
	ip   netip.Addr
	ns   string // Kubernetes namespace; "" is the demo's
}

// namespace is the pod's Kubernetes namespace.
func (p pod) namespace() string {
	if p.ns == "" {
		return namespace
	}
	return p.ns
}

// key names the pod in its network namespace's and container's names:
// unique across Kubernetes namespaces.
func (p pod) key() string {
	if p.ns == "" {
		return p.name
	}
	return p.ns + "-" + p.name
}

// demoPods places the web backends round-robin over the nodes and the
// client on node 1, so with two nodes the client has a backend on its own
// node (web-0) and one on the other (web-1).
func demoPods(nodes int) []pod {
	var pods []pod
	for k := range 3 {
		pods = append(pods, pod{name: fmt.Sprintf("web-%d", k), app: "web", node: k%nodes + 1})
	}
	return append(pods, pod{name: "client", app: "client", node: 1})
}

// nodeDir holds a node's CNI socket, state, conflist and libcni cache.
func nodeDir(i int) string { return filepath.Join(StateDir, nodeName(i)) }

func cniSocket(i int) string  { return filepath.Join(nodeDir(i), "cni.sock") }
func cniConfDir(i int) string { return filepath.Join(nodeDir(i), "net.d") }

// waitCNIReady waits, as a runtime does before it starts pods, for node
// i's agent to install its conflist (once its CNI API answers) and for the
// network's STATUS to succeed (once the agent knows the node's pod CIDR).
func waitCNIReady(ctx context.Context, bin string, i int, timeout time.Duration) error {
	path := filepath.Join(cniConfDir(i), cniserver.ConflistName)
	node, err := nettopo.OpenNS(nodeNSName(i))
	if err != nil {
		return err
	}
	defer node.Release()
	cni := cniConfig(bin, i)
	deadline := time.Now().Add(timeout)
	err = fmt.Errorf("no conflist %s yet", path)
	for time.Now().Before(deadline) {
		var list *libcni.NetworkConfigList
		if list, err = libcni.ConfListFromFile(path); err == nil {
			err = node.Do(func() error { return cni.GetStatusNetworkList(ctx, list) })
			if err == nil {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("the CNI of %s is not ready after %s: %w (see %s/agent-%s.log)",
		nodeName(i), timeout, err, StateDir, nodeName(i))
}

// cniConfig is how a runtime on node i finds the plugins: in bin.
func cniConfig(bin string, i int) *libcni.CNIConfig {
	return libcni.NewCNIConfigWithCacheDir([]string{bin}, filepath.Join(nodeDir(i), "cni-cache"), nil)
}

// addPod creates the pod's namespace and attaches it the way a container
// runtime on the node would: libcni with the conflist the agent installed,
// the plugins from bin, executed from a thread in the node's namespace. It
// returns the pod with the address IPAM gave it.
func addPod(ctx context.Context, bin string, p pod) (pod, error) {
	list, err := libcni.ConfListFromFile(filepath.Join(cniConfDir(p.node), cniserver.ConflistName))
	if err != nil {
		return p, err
	}
	ns, err := nettopo.NewNS(podNSName(p.key()))
	if err != nil {
		return p, err
	}
	ns.Release()
	node, err := nettopo.OpenNS(nodeNSName(p.node))
	if err != nil {
		return p, err
	}
	defer node.Release()
	cni := cniConfig(bin, p.node)
	rt := &libcni.RuntimeConf{
		ContainerID: "lab-" + p.key(),
		NetNS:       "/run/netns/" + podNSName(p.key()),
		IfName:      "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", p.namespace()},
			{"K8S_POD_NAME", p.name}, {"K8S_POD_INFRA_CONTAINER_ID", "lab-" + p.key()}},
	}
	var res *current.Result
	err = node.Do(func() error {
		r, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			return err
		}
		res, err = current.NewResultFromResult(r)
		return err
	})
	if err != nil {
		return p, fmt.Errorf("CNI ADD of pod %s on %s: %w", p.name, nodeName(p.node), err)
	}
	for _, ipc := range res.IPs {
		if a, ok := netip.AddrFromSlice(ipc.Address.IP); ok && a.Unmap().Is4() {
			p.ip = a.Unmap()
			return p, nil
		}
	}
	return p, fmt.Errorf("CNI ADD of pod %s: no IPv4 address in the result %v", p.name, res)
}
