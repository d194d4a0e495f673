package lab

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fastpath-net/fastpath/internal/routing"
	"github.com/fastpath-net/fastpath/internal/testenv"
	"github.com/fastpath-net/fastpath/internal/testpriv"
)

// TestLabUpDown runs the real lab (control plane, two nodes, agents, pods
// through fastpath-cni) in each routing mode, requires every check of its
// table to pass (known gaps aside), and then requires `down` to leave no
// namespace, pin, state file or process behind.
func TestLabUpDown(t *testing.T) {
	testpriv.Require(t)
	if testing.Short() {
		t.Skip("starts a control plane and two nodes")
	}
	if _, err := testenv.BinDir(); err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+"/", "../../cmd/fastpath-agent", "../../cmd/fastpath-cni",
		"../../cmd/fastpath-lab", "../../cmd/fastpathctl")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	for _, mode := range []routing.Mode{routing.ModeNative, routing.ModeVXLAN} {
		t.Run(string(mode), func(t *testing.T) { upDown(t, bin, mode) })
	}
}

func upDown(t *testing.T, bin string, mode routing.Mode) {
	id := make([]byte, 3)
	_, _ = rand.Read(id)
	tag := "lt" + hex.EncodeToString(id)
	oldBase, oldState, oldPin := Base, StateDir, PinDir
	Base, StateDir, PinDir = "fp-"+tag, "/run/fastpath-"+tag, "/sys/fs/bpf/fastpath-"+tag
	t.Cleanup(func() {
		if err := Down(io.Discard); err != nil {
			t.Errorf("down in cleanup: %v", err)
		}
		Base, StateDir, PinDir = oldBase, oldState, oldPin
	})
	var out bytes.Buffer
	err := Up(t.Context(), Options{Nodes: 2, RoutingMode: mode, Bin: bin}, &out)
	if err != nil {
		t.Fatalf("up: %v\n%s\n%s", err, out.String(), logs())
	}
	t.Logf("%s", out.String())
	for _, want := range []string{"ok    pod -> pod, same node", "ok    pod -> pod, across nodes", "ok    pod -> ClusterIP",
		"ok    external -> LoadBalancer IP", "ok    pod -> external"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the table has no %q line", want)
		}
	}
	st, err := loadState()
	if err != nil {
		t.Fatal(err)
	}
	// A second up finds the lab running and checks it again.
	out.Reset()
	if err := Up(t.Context(), Options{Nodes: 2, RoutingMode: mode, Bin: bin}, &out); err != nil ||
		!strings.Contains(out.String(), "already up") {
		t.Errorf("second up: %v\n%s", err, out.String())
	}
	if err := Down(io.Discard); err != nil {
		t.Fatalf("down: %v", err)
	}
	for name, p := range st.Processes {
		if alive(p) {
			t.Errorf("process %s (pid %d) still runs after down", name, p.PID)
		}
	}
	if ns := labNamespaces(); len(ns) > 0 {
		t.Errorf("namespaces left after down: %v", ns)
	}
	for _, dir := range []string{PinDir, StateDir} {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still exists after down (%v)", dir, err)
		}
	}
}

// logs returns the tails of the lab's logs, for a failed up.
func logs() string {
	paths, _ := filepath.Glob(filepath.Join(StateDir, "*.log"))
	var b strings.Builder
	for _, p := range paths {
		data, _ := os.ReadFile(p)
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > 15 {
			lines = lines[len(lines)-15:]
		}
		b.WriteString("--- " + p + " ---\n" + strings.Join(lines, "\n") + "\n")
	}
	return b.String()
}

func TestAliveSeesAJustStartedProcess(t *testing.T) {
	cmd := exec.Command("sleep", "5")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p, err := procOf(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if !alive(p) {
		t.Fatal("a process just started counts as dead")
	}
	if alive(Proc{PID: p.PID, Start: p.Start + 1}) {
		t.Fatal("a process with another start time (a reused PID) counts as ours")
	}
	_ = cmd.Process.Kill()
	// Not reaped yet: a zombie, which is dead.
	for range 100 {
		if st, _, err := procStat(p.PID); err == nil && st == 'Z' {
			break
		}
		_ = exec.Command("true").Run()
	}
	if alive(p) {
		t.Fatal("a killed, unreaped process counts as alive")
	}
	_ = cmd.Wait()
}
