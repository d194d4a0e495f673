package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// AgentStatusPath is where the agent serves AgentStatus, on its metrics
// address (--metrics-addr, loopback by default).
const AgentStatusPath = "/v1/status"

// AgentStatus is what the running agent knows and the pinned maps do not
// say: its configuration, the apiserver's reachability, what it programmed
// and what went wrong lately.
type AgentStatus struct {
	Version   string    `json:"version"`
	StartedAt time.Time `json:"startedAt"`
	Source    string    `json:"source"` // kubernetes or services-file
	// APIServer is nil without the Kubernetes source.
	APIServer *Reachability `json:"apiServer,omitempty"`
	Datapath  DatapathMode  `json:"datapath"`
	Services  int           `json:"services"`
	Frontends int           `json:"frontends"`
	Backends  int           `json:"backends"`
	Pending   int           `json:"pendingFrontends"`
	Endpoints int           `json:"endpoints"` // pods the CNI attached; -1 without the CNI
	LastSync  time.Time     `json:"lastSync"`
	// LastSyncError is the error of the last sync, "" when it succeeded.
	LastSyncError string      `json:"lastSyncError,omitempty"`
	Errors        []LogRecord `json:"lastErrors"` // the newest warnings and errors, oldest first
	// Nodes are the probes of the other nodes' agents (Kubernetes only).
	Nodes []NodeHealth `json:"nodes,omitempty"`
}

// NodeHealth is the last probe of another node's agent.
type NodeHealth struct {
	Node    string `json:"node"`
	Address string `json:"address"`
	Reachability
}

// Reachability is one probe of a peer.
type Reachability struct {
	OK        bool    `json:"ok"`
	LatencyMS float64 `json:"latencyMs"`
	Error     string  `json:"error,omitempty"`
}

// DatapathMode is how the datapath is attached and what runs.
type DatapathMode struct {
	TC          string   `json:"tc"`                    // tcx, clsact or auto
	Interfaces  []string `json:"interfaces"`            // internal and external
	SocketLB    bool     `json:"socketLB"`              // cgroup programs attached
	Routing     string   `json:"routing,omitempty"`     // native, vxlan or ""
	Policy      bool     `json:"policy"`                // NetworkPolicy enforced
	CNI         bool     `json:"cni"`                   // the CNI API serves
	PinDir      string   `json:"pinDir"`                // bpffs directory of the pins
	AttachState string   `json:"attachState,omitempty"` // "waiting for recreated maps" while held back
}

// LogRecord is one warning or error the agent logged.
type LogRecord struct {
	Time  time.Time `json:"time"`
	Level string    `json:"level"`
	Msg   string    `json:"msg"`
}

// FetchAgentStatus asks the agent at base (http://IP:PORT of its metrics
// address).
func FetchAgentStatus(ctx context.Context, base string) (*AgentStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+AgentStatusPath, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", req.URL, resp.Status)
	}
	var st AgentStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, fmt.Errorf("%s: %w", req.URL, err)
	}
	return &st, nil
}

// NodeStatus is fastpathctl status: the agent's view when it answers, and
// the pinned datapath always. The pinned Status is embedded, so its JSON
// fields stay where they were before the agent's view was added.
type NodeStatus struct {
	*Status
	Agent      *AgentStatus `json:"agent,omitempty"`
	AgentError string       `json:"agentError,omitempty"` // why Agent is missing
	// DatapathError: the pins could not be read (no datapath on this node).
	DatapathError string `json:"datapathError,omitempty"`
}

// FormatNodeStatus renders one screen; verbose adds every counter, the
// pinned links and all recent errors.
func FormatNodeStatus(st *NodeStatus, verbose bool) string {
	var b strings.Builder
	if a := st.Agent; a != nil {
		fmt.Fprintf(&b, "Agent:          running, version %s, up %s, source %s\n", a.Version,
			time.Since(a.StartedAt).Round(time.Second), a.Source)
		if a.APIServer != nil {
			if a.APIServer.OK {
				fmt.Fprintf(&b, "Kube-apiserver: ok (%.1f ms)\n", a.APIServer.LatencyMS)
			} else {
				fmt.Fprintf(&b, "Kube-apiserver: UNREACHABLE: %s\n", a.APIServer.Error)
			}
		}
		d := a.Datapath
		mode := "tc " + d.TC
		if d.SocketLB {
			mode += ", socket LB"
		}
		if d.Routing != "" {
			mode += ", routing " + d.Routing
		}
		if d.Policy {
			mode += ", NetworkPolicy"
		}
		if d.CNI {
			mode += ", CNI"
		}
		if d.AttachState != "" {
			mode += " (" + d.AttachState + ")"
		}
		fmt.Fprintf(&b, "Datapath:       %s on %s\n", mode, orNone(d.Interfaces))
		fmt.Fprintf(&b, "Services:       %d (%d frontends, %d backends, %d pending)\n", a.Services, a.Frontends, a.Backends, a.Pending)
		if a.Endpoints >= 0 {
			fmt.Fprintf(&b, "Endpoints:      %d\n", a.Endpoints)
		}
		if len(a.Nodes) > 0 {
			up := 0
			for _, n := range a.Nodes {
				if n.OK {
					up++
				}
			}
			fmt.Fprintf(&b, "Nodes:          %d/%d reachable\n", up, len(a.Nodes))
			for _, n := range a.Nodes {
				switch {
				case !n.OK:
					fmt.Fprintf(&b, "  %-20s %-15s UNREACHABLE: %s\n", n.Node, n.Address, n.Error)
				case verbose:
					fmt.Fprintf(&b, "  %-20s %-15s ok (%.1f ms)\n", n.Node, n.Address, n.LatencyMS)
				}
			}
		}
		sync := "ok"
		if a.LastSyncError != "" {
			sync = "FAILED: " + a.LastSyncError
		}
		fmt.Fprintf(&b, "Last sync:      %s ago, %s\n", time.Since(a.LastSync).Round(time.Millisecond), sync)
		errs := a.Errors
		if !verbose && len(errs) > 3 {
			errs = errs[len(errs)-3:]
		}
		fmt.Fprintf(&b, "Last errors:    %d\n", len(a.Errors))
		for _, e := range errs {
			fmt.Fprintf(&b, "  %s %-5s %s\n", e.Time.Format(time.TimeOnly), e.Level, e.Msg)
		}
	} else {
		fmt.Fprintf(&b, "Agent:          NOT REACHABLE (%s); showing the pinned datapath only\n", st.AgentError)
	}
	if st.Status == nil {
		fmt.Fprintf(&b, "\nDatapath pins:  none readable (%s)\n", st.DatapathError)
		return b.String()
	}
	b.WriteString("\n")
	if verbose {
		b.WriteString(FormatStatus(st.Status))
		return b.String()
	}
	b.WriteString(formatMaps(st.Status))
	return b.String()
}
