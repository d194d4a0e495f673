package servicefile

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	lb "github.com/fastpath-net/fastpath/internal/loadbalancer"
)

const interval = 5 * time.Millisecond

func version(backend string) string {
	return "services:\n  - name: web\n    clusterIP: 10.96.0.10\n    ports: [{port: 80}]\n    backends: [{address: " + backend + "}]\n"
}

// watchRig runs Watch on a file in a temporary directory and records what
// it reports.
type watchRig struct {
	t       *testing.T
	path    string
	changes chan []lb.Service
	errs    chan error
	stop    func()
}

func newWatchRig(t *testing.T) *watchRig {
	w := &watchRig{
		t:       t,
		path:    filepath.Join(t.TempDir(), "services.yaml"),
		changes: make(chan []lb.Service, 100),
		errs:    make(chan error, 100),
	}
	return w
}

func (w *watchRig) start() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Watch(ctx, w.path, interval, func(s []lb.Service) { w.changes <- s }, func(err error) { w.errs <- err })
	}()
	w.stop = func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			w.t.Error("Watch did not return after its context ended")
		}
	}
	w.t.Cleanup(w.stop)
}

// replace writes content to a new file and renames it over the old one,
// as editors and config-management tools do.
func (w *watchRig) replace(content string) {
	tmp := w.path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		w.t.Fatal(err)
	}
	if err := os.Rename(tmp, w.path); err != nil {
		w.t.Fatal(err)
	}
}

// wantChange waits for onChange and checks the backend it got. Errors
// reported meanwhile are tolerated: a file rewritten in place can be seen
// half-written, and that must reach onError, never onChange.
func (w *watchRig) wantChange(backend string) {
	w.t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case svcs := <-w.changes:
			got := svcs[0].Frontends[0].Backends[0].Addr.String()
			if got != backend {
				w.t.Fatalf("onChange got backend %s, want %s", got, backend)
			}
			return
		case <-w.errs:
		case <-deadline:
			w.t.Fatalf("no onChange with backend %s", backend)
		}
	}
}

func (w *watchRig) wantError(substr string) {
	w.t.Helper()
	select {
	case err := <-w.errs:
		if !strings.Contains(err.Error(), substr) {
			w.t.Fatalf("onError got %v, want %q", err, substr)
		}
	case svcs := <-w.changes:
		w.t.Fatalf("onChange called with %+v, want an error", svcs)
	case <-time.After(5 * time.Second):
		w.t.Fatalf("no onError with %q", substr)
	}
}

func (w *watchRig) wantQuiet() {
	w.t.Helper()
	select {
	case svcs := <-w.changes:
		w.t.Fatalf("onChange called with %+v, want nothing", svcs)
	case err := <-w.errs:
		w.t.Fatalf("onError called with %v, want nothing", err)
	case <-time.After(20 * interval):
	}
}

func TestWatch(t *testing.T) {
	w := newWatchRig(t)
	w.replace(version("10.0.0.1"))
	w.start()
	w.wantChange("10.0.0.1")

	// A broken version reaches onError only, once, and changes nothing.
	w.replace(strings.Replace(version("10.0.0.1"), "port: 80", "port: 70000", 1))
	w.wantError("ports[0].port: 70000 is out of range 1-65535")
	w.wantQuiet()

	// Fixed in place (same inode, truncate and write).
	if err := os.WriteFile(w.path, []byte(version("10.0.0.2")), 0o644); err != nil {
		t.Fatal(err)
	}
	w.wantChange("10.0.0.2")

	// Same size, other content: the hash tells.
	w.replace(version("10.0.0.3"))
	w.wantChange("10.0.0.3")

	// Touched, not changed: nothing to report.
	now := time.Now().Add(time.Second)
	if err := os.Chtimes(w.path, now, now); err != nil {
		t.Fatal(err)
	}
	w.wantQuiet()

	// Gone, then back.
	if err := os.Remove(w.path); err != nil {
		t.Fatal(err)
	}
	w.wantError("no such file")
	w.wantQuiet()
	w.replace(version("10.0.0.4"))
	w.wantChange("10.0.0.4")
}

func TestWatchStartsWithBrokenFile(t *testing.T) {
	w := newWatchRig(t)
	w.replace("services: [")
	w.start()
	w.wantError("did not find expected node content")
	w.replace(version("10.0.0.9"))
	w.wantChange("10.0.0.9")
}
