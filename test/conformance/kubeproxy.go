package conformance

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/fastpath-net/fastpath/internal/testenv"
	"github.com/fastpath-net/fastpath/test/internal/kubeproxy"
	"github.com/fastpath-net/fastpath/test/internal/nsproc"
)

// kubeProxy is the reference: the real kube-proxy v1.37 in iptables mode,
// running inside the node namespace (never in the root namespace: it is
// forked from a thread that entered the node's namespace, and Start checks
// /proc/PID/ns/net before the first case). Its rules live in that namespace
// and vanish with it.
type kubeProxy struct {
	bin    string
	topo   *Topology
	thread *nsproc.Thread
	proc   *nsproc.Child
}

func newKubeProxy() (*kubeProxy, error) {
	bin, err := testenv.Binary("kube-proxy")
	if err != nil {
		return nil, err
	}
	return &kubeProxy{bin: bin}, nil
}

func (k *kubeProxy) Name() string { return "kube-proxy" }

func (k *kubeProxy) Start(ctx context.Context, env *testenv.Env, topo *Topology, dir string) error {
	k.topo = topo
	kubeconfig := filepath.Join(dir, "kube-proxy.kubeconfig")
	// The server is the control-plane end of the node's own link: the
	// testenv forwarder listens in the root namespace, out of reach here.
	if err := env.WriteKubeconfigFor(kubeconfig, topo.APIServerURL, env.KubeProxy); err != nil {
		return err
	}
	var err error
	if k.thread, err = nsproc.NewThread(topo.Node); err != nil {
		return err
	}
	k.proc, err = kubeproxy.Start(k.thread, topo.Node, dir, "kube-proxy", k.bin, kubeproxy.Config{
		Kubeconfig:  kubeconfig,
		NodeName:    nodeName,
		Mode:        "iptables",
		ClusterCIDR: clusterCIDR,
		// NodePorts on the Node's address facing the external client only,
		// the same set fastpath is given.
		NodePortAddresses: nodePortCIDR,
		// kube-proxy's default is 1s between syncs; a shorter one only
		// shortens the waits, the rules are the same.
		MinSyncPeriod: 100 * time.Millisecond,
	})
	return err
}

// natRules is `iptables-save -t nat` inside the node namespace.
func (k *kubeProxy) natRules() (string, error) {
	if err := k.proc.Running(); err != nil {
		return "", fmt.Errorf("%w\n%s", err, k.proc.Tail(30))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := k.thread.Run(ctx, "iptables-save", "-t", "nat")
	return string(out), err
}

func (k *kubeProxy) HasMarker(vip string, port int) (bool, error) {
	rules, err := k.natRules()
	if err != nil {
		return false, err
	}
	// The service rule for the marker's current port and the DNAT to the
	// marker endpoint's current port: the first comes from the Service
	// watch, the second from the EndpointSlice watch. No DNAT to the
	// decoy: kube-proxy knows its zone (marker.slice).
	svc := fmt.Sprintf("-d %s/32 -p tcp -m comment --comment \"%s/%s:m cluster IP\" -m tcp --dport %d ", vip, namespace, markerName, port)
	dnat := fmt.Sprintf("--to-destination %s:%d", markerIPStr, port)
	decoy := "--to-destination " + markerDecoyIPStr + ":"
	return strings.Contains(rules, svc) && strings.Contains(rules, dnat) && !strings.Contains(rules, decoy), nil
}

var (
	// -A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment "..." -m tcp --dport 80 -j KUBE-SVC-...
	svcRule = regexp.MustCompile(`^-A KUBE-SERVICES -d (\S+)/32 -p (\w+) .*--dport (\d+) `)
	// -A KUBE-NODEPORTS -p tcp -m comment --comment "..." -m tcp --dport 30001 -j KUBE-EXT-...
	nodePortRule = regexp.MustCompile(`^-A KUBE-NODEPORTS -p (\w+) .*--dport (\d+) `)
)

func (k *kubeProxy) Frontends() ([]string, error) {
	rules, err := k.natRules()
	if err != nil {
		return nil, err
	}
	// Services without endpoints are REJECTed in the filter table.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	filter, err := k.thread.Run(ctx, "iptables-save", "-t", "filter")
	if err != nil {
		return nil, err
	}
	var out []string
	sc := bufio.NewScanner(strings.NewReader(rules + string(filter)))
	for sc.Scan() {
		line := sc.Text()
		if m := svcRule.FindStringSubmatch(line); m != nil {
			out = append(out, fmt.Sprintf("%s:%s/%s", m[1], m[3], strings.ToUpper(m[2])))
		}
		// NodePorts: only on the Node's address (--nodeport-addresses).
		if m := nodePortRule.FindStringSubmatch(line); m != nil {
			out = append(out, fmt.Sprintf("%s:%s/%s", nodeIPStr, m[2], strings.ToUpper(m[1])))
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

func (k *kubeProxy) Logs() string {
	if k.proc == nil {
		return "(not started)"
	}
	return k.proc.Tail(40)
}

// Rules is the whole ruleset in the node namespace, for failure logs.
func (k *kubeProxy) Rules() string {
	if k.thread == nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := k.thread.Run(ctx, "iptables-save")
	if err != nil {
		return err.Error()
	}
	return string(bytes.TrimSpace(out))
}

func (k *kubeProxy) Stop() error {
	if k.proc != nil {
		k.proc.Stop(5 * time.Second)
	}
	if k.thread != nil {
		k.thread.Close()
		k.thread = nil
	}
	// Its rules are in the node namespace, which the topology deletes.
	return nil
}
