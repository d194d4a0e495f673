package e2e

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fastpath-net/fastpath/internal/ctl"
	"github.com/fastpath-net/fastpath/test/internal/nsproc"
)

// TestStatusAsksTheAgentAndFallsBackToPins runs fastpathctl status inside
// the node, as an operator on the node would: it shows the agent's view
// (version, source, datapath mode, Services, last errors) and the pinned
// maps; with the agent stopped, the pinned maps alone and why.
func TestStatusAsksTheAgentAndFallsBackToPins(t *testing.T) {
	l := startWeb(t)
	th, err := nsproc.NewThread(l.star.Node)
	if err != nil {
		t.Fatal(err)
	}
	defer th.Close()
	run := func(args ...string) string {
		t.Helper()
		out, err := th.Run(t.Context(), filepath.Join(bin, "fastpathctl"), append([]string{"--bpffs-dir", l.pinDir}, args...)...)
		if err != nil {
			t.Fatalf("fastpathctl %v: %v", args, err)
		}
		return string(out)
	}
	status := func() ctl.NodeStatus {
		t.Helper()
		var st ctl.NodeStatus
		if err := json.Unmarshal([]byte(run("-o", "json", "status")), &st); err != nil {
			t.Fatal(err)
		}
		return st
	}

	// A bad file: the agent keeps the last good state and logs the error.
	l.writeServices(strings.Replace(l.webService("be1", "be2"), "port: 80,", "port: 70000,", 1))
	waitLog(t, l, "70000")
	var st ctl.NodeStatus
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if st = status(); st.Agent != nil && len(st.Agent.Errors) > 0 {
			break
		}
	}
	a := st.Agent
	if a == nil || st.Status == nil {
		t.Fatalf("status %+v; want the agent's view and the pins", st)
	}
	if a.Version != "dev" || a.Source != "services-file" || a.Services != 1 || a.Frontends != 2 || a.Backends != 4 ||
		a.LastSyncError != "" || len(a.Datapath.Interfaces) != 3 || a.Datapath.PinDir != l.pinDir || a.Endpoints != -1 {
		t.Errorf("agent status %+v; want version dev, the services file, 1 Service with 2 frontends (http, dns) of 2 backends each, 3 interfaces", *a)
	}
	if len(a.Errors) == 0 || !strings.Contains(a.Errors[len(a.Errors)-1].Msg, "70000") {
		t.Errorf("last errors %+v; want the bad port", a.Errors)
	}
	text := run("status")
	for _, want := range []string{"Agent:          running, version dev", "Services:       1 (2 frontends, 4 backends, 0 pending)", "Datapath:       tc auto on h-client",
		"Last errors:", "70000", "fp_ct", "FILL"} {
		if !strings.Contains(text, want) {
			t.Errorf("status text has no %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "COUNTER") || !strings.Contains(run("status", "--verbose"), "COUNTER (packets)") {
		t.Errorf("counters belong to --verbose only")
	}

	l.stopAgent()
	st = status()
	if st.Agent != nil || !strings.Contains(st.AgentError, "connection refused") || st.Status == nil || len(st.Maps) == 0 {
		t.Fatalf("status with the agent stopped: %+v; want the pinned maps and why the agent is missing", st)
	}
	if text := run("status"); !strings.Contains(text, "Agent:          NOT REACHABLE") || !strings.Contains(text, "fp_services") {
		t.Errorf("status text with the agent stopped:\n%s", text)
	}
}
