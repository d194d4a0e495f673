package lab

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fastpath-net/fastpath/internal/agent"
	"github.com/fastpath-net/fastpath/internal/nettopo"
	"github.com/fastpath-net/fastpath/internal/routing"
	"github.com/fastpath-net/fastpath/internal/testpriv"
)

// TestL7Upgrade upgrades node 1's agent twice (a new agent started beside
// the old one, then the old one stopped) while the client
// pod opens a new connection per request to web-2 through the web pods'
// HTTP rules. Every request must be answered as the rules say (GET /public
// 200, POST /admin 403), and no request may take longer than the old
// agent's stop took plus 200 ms: a dropped SYN costs a client 1 s.
func TestL7Upgrade(t *testing.T) {
	testpriv.Require(t)
	if testing.Short() {
		t.Skip("starts a control plane and two nodes")
	}
	bin := buildLab(t)
	startLab(t, bin, routing.ModeNative)
	st, err := loadState()
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{Nodes: 2, RoutingMode: routing.ModeNative, Bin: bin}
	pods, err := podsWithIPs(t.Context(), mustClient(t), opts.Nodes)
	if err != nil {
		t.Fatal(err)
	}
	createFNP(t, mustDynamic(t), "web-l7-upgrade", webL7) // goes with the lab
	client := openPodNS(t, "client")
	base := fmt.Sprintf("http://%s:%d", findPod(pods, "web-2").ip, webHTTPPort)
	waitCurl(t, client, "POST /admin denied", 403, "-X", "POST", base+"/admin")

	// As the DaemonSet's maxSurge does: the new agent starts, takes the
	// listener once its rules are programmed, then the old one stops.
	upgradeL7(t, st, opts, client, base, `from="previous agent"`)
	// The old agent is told to stop while the new one still waits for its
	// rules (with hostNetwork, the new pod's readiness probe may be
	// answered by the old agent): it serves on until the new one takes the
	// listener.
	upgradeL7(t, st, opts, client, base, agent.MsgL7SuccessorWaiting)
}

// upgradeL7 starts a new agent on node 1 beside the running one, waits for
// the log line stopWhen, stops the old one, and checks the requests newConnections made
// meanwhile.
func upgradeL7(t *testing.T, st *State, opts Options, client *nettopo.NS, base, stopWhen string) {
	t.Helper()
	stopLoad := make(chan struct{})
	results := make(chan []request, 1)
	go func() { results <- newConnections(client, base, stopLoad) }()
	defer func() {
		select {
		case <-stopLoad:
		default:
			close(stopLoad)
		}
	}()
	time.Sleep(500 * time.Millisecond)

	name := "agent-" + nodeName(1)
	old := st.Processes[name]
	t.Cleanup(func() { _ = stop(old) }) // when the test fails before stopping it
	logStart := logSize()
	upgrade := time.Now()
	if err := startAgent(opts, st, 1); err != nil {
		t.Fatal(err)
	}
	next := st.Processes[name]
	if err := waitLog(next, logStart, stopWhen); err != nil {
		t.Fatalf("%v\n%s", err, logs())
	}
	ready := time.Now()
	term := time.Now()
	if err := syscall.Kill(old.PID, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); alive(old); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the old agent (pid %d) still runs 20 s after SIGTERM", old.PID)
		}
	}
	restart := time.Since(term)
	if err := waitLog(next, logStart, `from="previous agent"`); err != nil {
		t.Fatalf("%v\n%s", err, logs())
	}
	time.Sleep(time.Second) // requests served by the new agent alone
	close(stopLoad)
	reqs := <-results
	t.Logf("new agent ready %v after it started; the old one stopped in %v; %d requests; the old agent waited for the new one: %v",
		ready.Sub(upgrade).Round(time.Millisecond), restart.Round(time.Millisecond), len(reqs),
		strings.Contains(logSince(logStart), "serving until it takes it"))

	bound := restart + 200*time.Millisecond
	during := 0
	for _, r := range reqs {
		if r.err != nil {
			t.Errorf("%s at +%v: %v", r.what, r.start.Sub(upgrade).Round(time.Millisecond), r.err)
			continue
		}
		if r.took > bound {
			t.Errorf("%s at +%v took %v, more than the old agent's stop (%v) + 200 ms", r.what,
				r.start.Sub(upgrade).Round(time.Millisecond), r.took.Round(time.Millisecond), restart.Round(time.Millisecond))
		}
		if !r.start.Before(upgrade) && r.start.Before(term.Add(restart)) {
			during++
		}
	}
	// The check means something only with requests while both agents ran
	// and while the old one stopped.
	if during < 10 {
		t.Errorf("only %d requests during the upgrade, want at least 10", during)
	}
}

// request is one request of newConnections: what, when, how long, and
// what went wrong (transport error, or an answer the rules do not give).
type request struct {
	what  string
	start time.Time
	took  time.Duration
	err   error
}

// newConnections alternates GET /public (allowed) and POST /admin (denied)
// from ns to base, each on a new connection, every 10 ms until stop (at
// most 6000 requests).
func newConnections(ns *nettopo.NS, base string, stop <-chan struct{}) []request {
	hc := ns.HTTPClient(5 * time.Second)
	var out []request
	for i := 0; i < 6000; i++ {
		select {
		case <-stop:
			return out
		case <-time.After(10 * time.Millisecond):
		}
		method, path, status, body := "GET", "/public", http.StatusOK, "hello from web-2"
		if i%2 == 1 {
			method, path, status, body = "POST", "/admin", http.StatusForbidden, "Access denied"
		}
		r := request{what: method + " " + path, start: time.Now()}
		req, _ := http.NewRequest(method, base+path, nil)
		resp, err := hc.Do(req)
		if err == nil {
			b, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch {
			case rerr != nil:
				err = rerr
			case resp.StatusCode != status || !strings.Contains(string(b), body):
				err = fmt.Errorf("status %d body %q, want %d %q", resp.StatusCode, b, status, body)
			}
		}
		r.took, r.err = time.Since(r.start), err
		out = append(out, r)
	}
	return out
}

func agentLog() string { return filepath.Join(StateDir, "agent-"+nodeName(1)+".log") }

func logSize() int64 {
	fi, err := os.Stat(agentLog())
	if err != nil {
		return 0
	}
	return fi.Size()
}

// logSince is node 1's agents' log from offset on (both agents of an
// upgrade append to it).
func logSince(offset int64) string {
	b, _ := os.ReadFile(agentLog())
	if int64(len(b)) < offset {
		return ""
	}
	return string(b[offset:])
}

// waitLog waits until node 1's agent log has line after offset, or the
// agent p exits.
func waitLog(p Proc, offset int64, line string) error {
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if strings.Contains(logSince(offset), line) {
			return nil
		}
		if !alive(p) {
			return fmt.Errorf("the new agent (pid %d) exited before logging %q", p.PID, line)
		}
	}
	return fmt.Errorf("the new agent (pid %d) did not log %q within 60 s", p.PID, line)
}
