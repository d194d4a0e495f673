package e2e

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fastpath-net/fastpath/internal/nettopo"
	"github.com/fastpath-net/fastpath/test/internal/testbin"
)

// newConnLoop opens a new connection through the VIP every 10 ms from the
// client, at most 3000 times, until stop is called, which returns how many
// succeeded and the failures.
func newConnLoop(client *nettopo.NS) (stop func() (ok int, failed []string)) {
	var wg sync.WaitGroup
	done := make(chan struct{})
	var ok int
	var failed []string
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 3000; i++ {
			select {
			case <-done:
				return
			case <-time.After(10 * time.Millisecond):
			}
			if _, err := nettopo.AskTCP(client, vip+":80", time.Second); err != nil {
				failed = append(failed, time.Now().Format("15:04:05.000")+" "+err.Error())
			} else {
				ok++
			}
		}
	}()
	return func() (int, []string) {
		close(done)
		wg.Wait()
		return ok, failed
	}
}

// TestRestartAndUpgradeLoseNoConnection stops the agent and starts it
// again, then replaces it with another build (another version string, as
// an upgrade would), while a long-lived TCP connection stays open and new
// connections are made every 10 ms. The pinned maps and links keep
// serving while no agent runs, and a new agent adopts them: the long-lived
// connection answers after each step and not one new connection fails.
func TestRestartAndUpgradeLoseNoConnection(t *testing.T) {
	upgrade := t.TempDir()
	if err := testbin.BuildWith(t.Context(), upgrade, []string{"-ldflags", "-X main.version=upgrade-test"}, "./cmd/fastpath-agent"); err != nil {
		t.Fatal(err)
	}
	l := startWeb(t)
	long, err := nettopo.OpenSession(l.client(), vip+":80", timeout)
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()
	stop := newConnLoop(l.client())

	step := func(what string) {
		t.Helper()
		l.waitBackends(httpFrontend, l.backendAddr("be1")+":8080", l.backendAddr("be2")+":8080")
		time.Sleep(300 * time.Millisecond) // new connections during the new agent's first syncs
		if err := long.Ping(what, timeout); err != nil {
			t.Fatalf("the long-lived connection broke %s: %v", what, err)
		}
	}
	l.stopAgent()
	time.Sleep(500 * time.Millisecond) // no agent at all
	l.startAgent()
	step("after a restart")

	l.stopAgent()
	time.Sleep(500 * time.Millisecond)
	l.agentBin = upgrade + "/fastpath-agent"
	l.startAgent()
	step("after an upgrade")
	if !strings.Contains(l.agentLog.String(), "version=upgrade-test") {
		t.Fatalf("the upgraded agent did not run (no version=upgrade-test in the log)")
	}

	ok, failed := stop()
	if len(failed) > 0 {
		t.Fatalf("%d of %d new connections failed across the restart and the upgrade:\n%s", len(failed), ok+len(failed), strings.Join(failed, "\n"))
	}
	if ok < 50 {
		t.Fatalf("only %d new connections were made; the loop proves nothing", ok)
	}
	t.Logf("%d new connections, none failed; the long-lived connection survived both", ok)
}
