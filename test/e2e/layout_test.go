package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/fastpath-net/fastpath/internal/datapath"
	"github.com/fastpath-net/fastpath/internal/datapath/pintest"
	"github.com/fastpath-net/fastpath/internal/nettopo"
)

// TestMapLayoutMismatchRefusedOrRecreated stands in for an upgrade whose
// maps changed: after the agent stops, fp_backends is pinned with another
// layout and fp_layout says v2. An agent refuses such pins (exits naming
// them and the flag), and the old datapath keeps serving; with
// --map-layout-mismatch=recreate it creates the changed maps anew, keeps
// fp_ct, attaches only once they are programmed, and neither the
// long-lived connection nor a new one fails.
func TestMapLayoutMismatchRefusedOrRecreated(t *testing.T) {
	l := startWeb(t)
	long, err := nettopo.OpenSession(l.client(), vip+":80", timeout)
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()
	l.stopAgent()
	maps := filepath.Join(l.pinDir, "maps")
	ctBefore := pintest.MapID(t, filepath.Join(maps, "fp_ct"))
	pinIncompatible(t, filepath.Join(maps, "fp_backends"))
	pintest.SetLayout(t, maps, 2)
	stop := newConnLoop(l.client())

	l.wantRefusal(fmt.Sprintf("layout v2, this agent's are v%d", datapath.MapLayoutVersion), "--map-layout-mismatch=recreate")
	pintest.SetLayout(t, maps, datapath.MapLayoutVersion)
	l.wantRefusal("fp_backends (", "--map-layout-mismatch=recreate")
	if err := long.Ping("refused", timeout); err != nil {
		t.Fatalf("the long-lived connection broke while agents refused the pins: %v", err)
	}

	l.extra = append(l.extra, "--map-layout-mismatch", "recreate")
	l.startAgent()
	l.waitBackends(httpFrontend, l.backendAddr("be1")+":8080", l.backendAddr("be2")+":8080")
	waitLog(t, l, "recreated maps programmed; this agent's programs are attached")
	time.Sleep(300 * time.Millisecond)
	if err := long.Ping("recreated", timeout); err != nil {
		t.Fatalf("the long-lived connection broke across the recreation: %v", err)
	}
	ok, failed := stop()
	if len(failed) > 0 || ok < 20 {
		t.Fatalf("%d new connections succeeded, %d failed:\n%s", ok, len(failed), strings.Join(failed, "\n"))
	}
	log := l.agentLog.String()
	if !strings.Contains(log, "created anew") || !strings.Contains(log, "fp_backends") || !strings.Contains(log, "fp_services") {
		t.Errorf("the log does not name the recreated maps (fp_backends and its group, fp_services):\n%s", log)
	}
	if got := pintest.MapID(t, filepath.Join(maps, "fp_ct")); got != ctBefore {
		t.Errorf("fp_ct was recreated (map id %d, was %d); a compatible ct must be kept", got, ctBefore)
	}
	m, err := ebpf.LoadPinnedMap(filepath.Join(maps, "fp_backends"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.MaxEntries() != 1024 {
		t.Errorf("fp_backends has %d entries; want the agent's 1024", m.MaxEntries())
	}
	if v := pintest.Layout(t, maps); v != datapath.MapLayoutVersion {
		t.Errorf("fp_layout %d after the recreation; want %d", v, datapath.MapLayoutVersion)
	}
}

// wantRefusal starts the agent and waits for it to exit with a log naming
// every want.
func (l *lab) wantRefusal(want ...string) {
	l.t.Helper()
	l.startAgent()
	done := make(chan error, 1)
	go func() { done <- l.agent.Wait() }()
	select {
	case err := <-done:
		l.agent = nil
		if err == nil {
			l.t.Fatal("the agent exited 0 on pins of another layout")
		}
	case <-time.After(10 * time.Second):
		l.t.Fatalf("the agent did not refuse pins of another layout within 10s; log:\n%s", l.agentLog)
	}
	for _, w := range want {
		if !strings.Contains(l.agentLog.String(), w) {
			l.t.Fatalf("the refusal does not say %q; log:\n%s", w, l.agentLog)
		}
	}
}

// pinIncompatible replaces the pin at path with a map of another layout;
// the programs attached keep the old map.
func pinIncompatible(t *testing.T, path string) {
	t.Helper()
	pintest.Replace(t, path, &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 7}).Close()
}

// TestUpgradeFromV5CarriesConnTrack stands in for an upgrade from layout
// v5, whose fp_ct values lacked ts_delta and ts_last: after the agent
// stops, fp_ct is pinned as a v5-shaped copy of its entries (the running
// programs keep the map they have) and fp_layout says 5. The agent, under
// the default refuse, carries fp_ct over, attaches, and hands the old map
// over: the long-lived connection, whose entries only the carried copy
// holds for the new programs, keeps working, and no new connection fails.
// (The late copy of FinishCarry is not exercised here: the running v6
// programs write to their own map, not to the v5 copy; the datapath test
// TestUpgradeCarriesV5ConnTrack covers it.)
func TestUpgradeFromV5CarriesConnTrack(t *testing.T) {
	l := startWeb(t)
	long, err := nettopo.OpenSession(l.client(), vip+":80", timeout)
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()
	l.stopAgent()
	maps := filepath.Join(l.pinDir, "maps")
	v5, n := pintest.Truncate(t, filepath.Join(maps, "fp_ct"), 72) // sizeof(struct fp_ct_entry) in v5
	v5.Close()
	if n == 0 {
		t.Fatal("fp_ct is empty: no connection to carry")
	}
	pintest.SetLayout(t, maps, 5)
	stop := newConnLoop(l.client())

	l.startAgent()
	waitLog(t, l, "carried map handed over")
	time.Sleep(300 * time.Millisecond) // new connections through the new programs
	if err := long.Ping("carried", timeout); err != nil {
		t.Fatalf("the long-lived connection broke across the upgrade from v5: %v", err)
	}
	ok, failed := stop()
	if len(failed) > 0 || ok < 20 {
		t.Fatalf("%d new connections succeeded, %d failed:\n%s", ok, len(failed), strings.Join(failed, "\n"))
	}
	log := l.agentLog.String()
	if !strings.Contains(log, "carried a pinned map of an older layout") || !strings.Contains(log, "map=fp_ct") ||
		!strings.Contains(log, fmt.Sprintf("entries=%d", n)) {
		t.Errorf("the log does not say fp_ct was carried with its %d entries:\n%s", n, log)
	}
	if v := pintest.Layout(t, maps); v != datapath.MapLayoutVersion {
		t.Errorf("fp_layout %d after the upgrade; want %d", v, datapath.MapLayoutVersion)
	}
}
