package e2e

import (
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fastpath-net/fastpath/internal/ctl"
	"github.com/fastpath-net/fastpath/internal/nettopo"
)

const (
	httpFrontend = vip + ":80/TCP"
	dnsFrontend  = vip + ":53/UDP"
)

func startWeb(t *testing.T, extraFlags ...string) *lab {
	l := newLab(t, "be1", "be2")
	l.extra = extraFlags
	l.writeServices(l.webService("be1", "be2"))
	l.startAgent()
	l.waitBackends(httpFrontend, l.backendAddr("be1")+":8080", l.backendAddr("be2")+":8080")
	return l
}

// askMany connects n times and returns how often each backend answered.
func askMany(t *testing.T, ns *nettopo.NS, n int) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for i := 0; i < n; i++ {
		name, err := nettopo.AskTCP(ns, vip+":80", timeout)
		if err != nil {
			t.Fatalf("connection %d to %s:80: %v", i, vip, err)
		}
		seen[name]++
	}
	return seen
}

func TestTCPThroughVIPReachesEveryBackend(t *testing.T) {
	for _, mode := range []string{"tcx", "clsact"} {
		t.Run(mode, func(t *testing.T) {
			l := startWeb(t, "--tc-mode", mode)
			seen := askMany(t, l.client(), 40)
			if seen["be1"] == 0 || seen["be2"] == 0 || len(seen) != 2 {
				t.Fatalf("40 connections reached %v; want both be1 and be2 and nothing else", seen)
			}
		})
	}
}

func TestUDPThroughVIPAnswersFromVIP(t *testing.T) {
	l := startWeb(t)
	l.waitBackends(dnsFrontend, l.backendAddr("be1")+":8080", l.backendAddr("be2")+":8080")
	for i := 0; i < 10; i++ {
		name, from, err := nettopo.AskUDP(l.client(), vip+":53", timeout)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if name != "be1" && name != "be2" {
			t.Fatalf("answer from %q, want be1 or be2", name)
		}
		if from != vip+":53" {
			t.Fatalf("answer came from %s, want the VIP %s:53 (reverse NAT)", from, vip)
		}
	}
}

func TestSessionSeesVIPAsPeer(t *testing.T) {
	l := startWeb(t)
	s, err := nettopo.OpenSession(l.client(), vip+":80", timeout)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := s.RemoteAddr().String(); got != vip+":80" {
		t.Fatalf("client's peer is %s, want %s:80", got, vip)
	}
	if err := s.Ping("hello", timeout); err != nil {
		t.Fatal(err)
	}
}

// sessionsOnEach opens sessions until each backend holds at least one.
func sessionsOnEach(t *testing.T, l *lab, backends ...string) map[string]*nettopo.Session {
	t.Helper()
	out := map[string]*nettopo.Session{}
	for i := 0; i < 64 && len(out) < len(backends); i++ {
		s, err := nettopo.OpenSession(l.client(), vip+":80", timeout)
		if err != nil {
			t.Fatal(err)
		}
		if out[s.Backend] != nil {
			s.Close()
			continue
		}
		out[s.Backend] = s
		t.Cleanup(func() { s.Close() })
	}
	if len(out) != len(backends) {
		t.Fatalf("64 connections reached only %d of %v", len(out), backends)
	}
	return out
}

func TestBackendRemovalKeepsEstablishedConnections(t *testing.T) {
	l := startWeb(t)
	sessions := sessionsOnEach(t, l, "be1", "be2")

	l.writeServices(l.webService("be2"))
	l.waitBackends(httpFrontend, l.backendAddr("be2")+":8080")

	if err := sessions["be1"].Ping("still-there", timeout); err != nil {
		t.Fatalf("connection to removed backend be1 broke: %v", err)
	}
	if seen := askMany(t, l.client(), 20); seen["be2"] != 20 {
		t.Fatalf("new connections after removing be1 reached %v; want only be2", seen)
	}
}

func TestAgentRestartKeepsConnectionsAndService(t *testing.T) {
	l := startWeb(t)
	sessions := sessionsOnEach(t, l, "be1", "be2")

	l.stopAgent()
	for name, s := range sessions {
		if err := s.Ping("agent-down", timeout); err != nil {
			t.Fatalf("connection to %s broke while the agent was down: %v", name, err)
		}
	}
	if seen := askMany(t, l.client(), 10); len(seen) == 0 {
		t.Fatal("no new connection worked while the agent was down")
	}

	l.startAgent()
	l.waitBackends(httpFrontend, l.backendAddr("be1")+":8080", l.backendAddr("be2")+":8080")
	for name, s := range sessions {
		if err := s.Ping("agent-back", timeout); err != nil {
			t.Fatalf("connection to %s broke after the agent restarted: %v", name, err)
		}
	}
	seen := askMany(t, l.client(), 30)
	if seen["be1"] == 0 || seen["be2"] == 0 {
		t.Fatalf("after restart 30 connections reached %v; want both backends", seen)
	}
}

func TestServiceWithoutBackendsRefusesConnections(t *testing.T) {
	l := newLab(t, "be1")
	l.writeServices(l.webService())
	l.startAgent()
	l.waitBackends(httpFrontend)

	start := time.Now()
	err := l.client().Do(func() error {
		c, err := net.DialTimeout("tcp", vip+":80", timeout)
		if err == nil {
			c.Close()
		}
		return err
	})
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial to a service without backends: %v; want ECONNREFUSED (as kube-proxy's REJECT)", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("refusal took %s; want an immediate answer, not a timeout", d)
	}
}

func TestBadServicesFileKeepsLastGoodState(t *testing.T) {
	l := startWeb(t)
	bad := strings.Replace(l.webService("be1"), "port: 80,", "port: 70000,", 1)
	l.writeServices(bad)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(l.agentLog.String(), "70000") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(l.agentLog.String(), "70000") {
		t.Fatalf("agent did not report the bad port; log:\n%s", l.agentLog)
	}
	got, err := l.backendsOf(httpFrontend)
	if err != nil || len(got) != 2 {
		t.Fatalf("after a bad file the service has %v (%v); want the last good state, both backends", got, err)
	}
	if seen := askMany(t, l.client(), 20); seen["be1"] == 0 || seen["be2"] == 0 {
		t.Fatalf("after a bad file connections reached %v; want both backends", seen)
	}
}

func TestFastpathctlShowsWhatTheMapsHold(t *testing.T) {
	l := startWeb(t)
	s, err := nettopo.OpenSession(l.client(), vip+":80", timeout)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	var svcs []ctl.ServiceRow
	l.ctl(&svcs, "service", "list")
	if !hasFrontend(svcs, httpFrontend, 2) || !hasFrontend(svcs, dnsFrontend, 2) {
		t.Fatalf("service list = %+v; want %s and %s with 2 backends each", svcs, httpFrontend, dnsFrontend)
	}

	var cts []ctl.CTRow
	l.ctl(&cts, "ct", "list")
	if !hasForward(cts, s.Backend, l) {
		t.Fatalf("ct list = %+v; want a forward entry to %s's address", cts, s.Backend)
	}

	var ns ctl.NodeStatus // from the root namespace: no agent there, the pins only
	l.ctl(&ns, "status")
	st := ns.Status
	if ns.Agent != nil || ns.AgentError == "" || st == nil {
		t.Fatalf("status = %+v; want no agent (it serves inside the node) and the pinned datapath", ns)
	}
	if st.Counters["forward_new"] == 0 || len(st.Links) == 0 || st.MapMemoryBytes == 0 {
		t.Fatalf("status = %+v; want forward_new > 0, pinned links and map memory", st)
	}
}

func hasFrontend(rows []ctl.ServiceRow, fe string, backends int) bool {
	for _, r := range rows {
		if r.Frontend == fe && len(r.Backends) == backends {
			return true
		}
	}
	return false
}

func hasForward(rows []ctl.CTRow, backend string, l *lab) bool {
	for _, r := range rows {
		if r.Direction == "forward" && r.Backend == l.backendAddr(backend)+":8080" && r.Dest == vip+":80" {
			return true
		}
	}
	return false
}

func TestMapFullIsReportedAndOthersKeepWorking(t *testing.T) {
	// web takes 6 service entries (2 frontends x (1 + 2 slots)); big wants 6 more.
	l := startWeb(t, "--services-max", "8")
	big := "  - name: big\n    namespace: demo\n    clusterIP: 10.96.0.30\n" +
		"    ports:\n      - {name: http, port: 80, protocol: TCP, targetPort: 8080}\n    backends:\n"
	for i := 0; i < 5; i++ {
		big += "      - address: 10.250.9." + string(rune('1'+i)) + "\n"
	}
	l.writeServices(l.webService("be1", "be2") + big)

	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(l.agentLog.String(), "map is full") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	log := l.agentLog.String()
	if !strings.Contains(log, "map is full") || !strings.Contains(log, "demo/big") {
		t.Fatalf("agent did not report the full map naming demo/big; log:\n%s", log)
	}
	if seen := askMany(t, l.client(), 20); seen["be1"] == 0 || seen["be2"] == 0 {
		t.Fatalf("with the map full, web's connections reached %v; want both backends", seen)
	}
}
