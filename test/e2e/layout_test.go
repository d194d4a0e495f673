package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/fastpath-net/fastpath/internal/datapath"
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
	ctBefore := pinnedID(t, filepath.Join(maps, "fp_ct"))
	pinIncompatible(t, filepath.Join(maps, "fp_backends"))
	setLayout(t, maps, 2)
	stop := newConnLoop(l.client())

	l.wantRefusal(fmt.Sprintf("layout v2, this agent's are v%d", datapath.MapLayoutVersion), "--map-layout-mismatch=recreate")
	setLayout(t, maps, datapath.MapLayoutVersion)
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
	if got := pinnedID(t, filepath.Join(maps, "fp_ct")); got != ctBefore {
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
	if v := readLayoutPin(t, maps); v != datapath.MapLayoutVersion {
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
	if err := removePin(path); err != nil {
		t.Fatal(err)
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 7})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Pin(path); err != nil {
		t.Fatal(err)
	}
}

func setLayout(t *testing.T, maps string, v uint32) {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(filepath.Join(maps, "fp_layout"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Update(uint32(0), v, ebpf.UpdateAny); err != nil {
		t.Fatal(err)
	}
}

func readLayoutPin(t *testing.T, maps string) uint32 {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(filepath.Join(maps, "fp_layout"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var v uint32
	if err := m.Lookup(uint32(0), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func pinnedID(t *testing.T, path string) ebpf.MapID {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	info, err := m.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	return id
}

func removePin(path string) error { return os.Remove(path) }
