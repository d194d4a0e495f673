// Command fastpathctl inspects the fastpath datapath on this node. It reads
// the pinned BPF maps directly, so it works while the agent is down and
// always shows what packets get.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/fastpath-net/fastpath/internal/ctl"
	"github.com/fastpath-net/fastpath/internal/datapath"
)

const usage = `usage: fastpathctl [flags] COMMAND

Commands:
  service list   frontends (VIP:port/proto) and the backends their slots hold
  ct list        connection-tracking entries of load-balanced flows
  affinity list  session-affinity memories (client -> backend) and whether they apply
  status [--verbose]
                 one screen: the agent (asked at --agent-url), kube-apiserver reachability,
                 datapath mode, Services, endpoints, last errors, and the pinned maps with
                 their fill; the pinned maps alone when the agent does not answer.
                 --verbose: every counter, the pinned links, all recent errors
  endpoint list  pods the CNI attached: endpoint ID, pod, addresses, host veth, netns
  uninstall      remove every pin (detaches TCX and cgroup programs)
  policy trace --from NS/POD --to NS/POD --port PORT/PROTO [--kubeconfig F]
                 would NetworkPolicy allow it, and which rule or default deny decided
  policy monitor [--drops] [--endpoint ID] [--identity ID] [-n N]
                 stream the datapath's policy verdicts (drops, sampled allows)
  monitor [--type drop,allow,policy,l7] [--namespace NS] [--pod [NS/]POD] [--identity ID]
          [--port PORT] [--reason CODE] [-n N] [-o json] [--agent IP:PORT]
                 stream the agent's flow events with readable reasons; with no
                 agent listening, read the pinned verdict ring directly

Flags:
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fastpathctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("bpffs-dir", envOr("FASTPATH_BPFFS_DIR", datapath.DefaultPinDir), "bpffs directory the agent pins under (env FASTPATH_BPFFS_DIR)")
	output := fs.String("o", "text", "output format: text or json")
	stateDir := fs.String("cni-state-dir", envOr("FASTPATH_CNI_STATE_DIR", "/var/lib/fastpath/cni"), "the agent's --cni-state-dir, for endpoint list (env FASTPATH_CNI_STATE_DIR)")
	agentURL := fs.String("agent-url", envOr("FASTPATH_AGENT_URL", "http://127.0.0.1:10249"),
		"the agent's --metrics-addr as a URL, where it serves its status (env FASTPATH_AGENT_URL)")
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *output != "text" && *output != "json" {
		fmt.Fprintf(stderr, "fastpathctl: -o %q: want text or json\n", *output)
		return 2
	}
	cmd := fs.Args()
	if len(cmd) == 0 {
		fs.Usage()
		return 2
	}
	var err error
	switch {
	case len(cmd) == 2 && (cmd[0] == "endpoint" || cmd[0] == "endpoints") && cmd[1] == "list":
		err = endpointList(*stateDir, *output, stdout)
	case cmd[0] == "monitor":
		err = monitor(cmd[1:], *dir, *stateDir, *output, stdout, stderr)
	case cmd[0] == "status":
		err = nodeStatus(cmd[1:], *dir, *agentURL, *output, stdout)
	default:
		err = dispatch(cmd, *dir, *output, stdout)
	}
	if errors.Is(err, errUsage) {
		fmt.Fprintf(stderr, "fastpathctl: %v\n", err)
		fs.Usage()
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "fastpathctl: %v\n", err)
		return 1
	}
	return 0
}

var errUsage = errors.New("unknown command")

func dispatch(cmd []string, dir, output string, w io.Writer) error {
	key := cmd[0]
	if len(cmd) > 1 {
		key += " " + cmd[1]
	}
	if key == "policy trace" {
		return policyTrace(cmd[2:], output, w)
	}
	if key == "policy monitor" {
		return policyMonitor(cmd[2:], dir, output, w)
	}
	if key == "uninstall" {
		return datapath.Uninstall(dir)
	}
	view, ok := map[string]func(*ctl.Pinned) (any, func() string, error){
		"service list":  serviceList,
		"services list": serviceList,
		"ct list":       ctList,
		"affinity list": affinityList,
	}[key]
	if !ok {
		return fmt.Errorf("%w %q", errUsage, key)
	}
	p, err := ctl.Open(dir)
	if err != nil {
		return err
	}
	defer p.Close()
	v, text, err := view(p)
	if err != nil {
		return err
	}
	return write(w, output, v, text)
}

// write prints v as JSON or text.
func write(w io.Writer, output string, v any, text func() string) error {
	if output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	_, err := io.WriteString(w, text())
	return err
}

// endpointList reads the CNI's endpoint records: files, not pinned maps,
// so it needs no bpffs and works while the agent is down.
func endpointList(stateDir, output string, w io.Writer) error {
	eps, err := ctl.Endpoints(stateDir)
	if werr := write(w, output, eps, func() string { return ctl.FormatEndpoints(eps) }); werr != nil {
		return werr
	}
	return err
}

func serviceList(p *ctl.Pinned) (any, func() string, error) {
	rows, err := ctl.Services(p.LB)
	return rows, func() string { return ctl.FormatServices(rows) }, err
}

func ctList(p *ctl.Pinned) (any, func() string, error) {
	rows, err := ctl.CT(p.CT)
	return rows, func() string { return ctl.FormatCT(rows) }, err
}

func affinityList(p *ctl.Pinned) (any, func() string, error) {
	rows, err := ctl.Affinity(p.LB, p.Affinity)
	return rows, func() string { return ctl.FormatAffinity(rows) }, err
}

// nodeStatus asks the agent and reads the pins; either may be missing (an
// agent stopped, a node without a datapath yet), and the screen says so.
// It fails only when neither answers.
func nodeStatus(args []string, dir, agentURL, output string, w io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	verbose := fs.Bool("verbose", false, "every counter, the pinned links and all recent errors")
	fs.BoolVar(verbose, "v", false, "short for --verbose")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: status: %v", errUsage, err)
	}
	st := &ctl.NodeStatus{}
	agent, err := ctl.FetchAgentStatus(context.Background(), agentURL)
	if err != nil {
		st.AgentError = err.Error()
	}
	st.Agent = agent
	if p, err := ctl.Open(dir); err != nil {
		st.DatapathError = err.Error()
	} else {
		defer p.Close()
		if st.Status, err = ctl.ReadStatus(p); err != nil {
			st.DatapathError = err.Error()
		}
	}
	if werr := write(w, output, st, func() string { return ctl.FormatNodeStatus(st, *verbose) }); werr != nil {
		return werr
	}
	if st.Agent == nil && st.Status == nil {
		return fmt.Errorf("neither the agent (%s) nor the pins under %s answer", st.AgentError, dir)
	}
	return nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
