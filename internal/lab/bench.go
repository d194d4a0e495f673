package lab

import (
	"fmt"
	"path/filepath"

	"k8s.io/client-go/kubernetes"

	"github.com/fastpath-net/fastpath/internal/nettopo"
)

// What benchmarks built on a running lab (test/bench/policy) reach: its
// client, its pods' and nodes' names, and its agents, which they restart
// to measure a cold computation.

// Namespace is the Kubernetes namespace of the demo pods.
const Namespace = namespace

// Client talks to the running lab's apiserver from inside the external
// client's namespace; release frees that namespace's handle.
func Client() (cs *kubernetes.Clientset, release func(), err error) {
	cs, ext, err := client()
	if err != nil {
		return nil, nil, err
	}
	return cs, ext.Release, nil
}

// PodNS is the network namespace of a demo pod ("client", "web-0", ...).
func PodNS(pod string) string { return podNSName(pod) }

// NodeName is node i's Node name (1-based).
func NodeName(i int) string { return nodeName(i) }

// NodePinDir is node i's agent's --bpffs-dir.
func NodePinDir(i int) string { return filepath.Join(PinDir, nodeName(i)) }

// AgentLog is the path of node i's agent log.
func AgentLog(i int) string { return filepath.Join(StateDir, "agent-"+nodeName(i)+".log") }

// AgentPID is the PID of node i's running agent.
func AgentPID(i int) (int, error) {
	st, err := loadState()
	if err != nil {
		return 0, err
	}
	p, ok := st.Processes["agent-"+nodeName(i)]
	if !ok || !alive(p) {
		return 0, fmt.Errorf("the agent of %s does not run", nodeName(i))
	}
	return p.PID, nil
}

// RestartAgent stops node i's agent and starts a new one with the same
// flags, recording it; it returns the new PID at once.
func RestartAgent(opts Options, i int) (int, error) {
	if err := opts.fill(); err != nil {
		return 0, err
	}
	st, err := loadState()
	if err != nil {
		return 0, err
	}
	name := "agent-" + nodeName(i)
	if err := stop(st.Processes[name]); err != nil {
		return 0, err
	}
	if err := startAgent(opts, st, i); err != nil {
		return 0, err
	}
	return st.Processes[name].PID, nil
}

// OpenNodeNS opens node i's network namespace.
func OpenNodeNS(i int) (*nettopo.NS, error) { return nettopo.OpenNS(nodeNSName(i)) }
