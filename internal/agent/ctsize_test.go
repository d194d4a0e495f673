package agent

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/fastpath-net/fastpath/internal/datapath"
	"github.com/fastpath-net/fastpath/internal/testpriv"
)

// TestCTEntriesDerivedOrPinned: --ct-max 0 sizes fp_ct from the node's
// RAM, unless a pinned fp_ct exists, whose size is kept (a new size would
// be a new map and every connection lost).
func TestCTEntriesDerivedOrPinned(t *testing.T) {
	testpriv.Require(t)
	cfg := Config{PinDir: t.TempDir(), CTMemoryRatio: datapath.DefaultCTMemoryRatio, Log: slog.New(slog.DiscardHandler)}
	mem, err := datapath.MemTotal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ctEntries(cfg)
	if want := datapath.CTEntriesFor(mem, datapath.DefaultCTMemoryRatio); err != nil || got != want {
		t.Fatalf("no pinned map: %d entries (%v); want %d for %d bytes of RAM", got, err, want, mem)
	}

	cfg.PinDir = fmt.Sprintf("/sys/fs/bpf/fp-ctsize-%d", os.Getpid())
	t.Cleanup(func() { _ = os.RemoveAll(cfg.PinDir) })
	if err := os.MkdirAll(filepath.Join(cfg.PinDir, "maps"), 0o700); err != nil {
		t.Fatal(err)
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.LRUHash, KeySize: 4, ValueSize: 4, MaxEntries: 777})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Pin(filepath.Join(cfg.PinDir, "maps", "fp_ct")); err != nil {
		t.Fatal(err)
	}
	if got, err := ctEntries(cfg); err != nil || got != 777 {
		t.Fatalf("pinned fp_ct of 777: %d (%v); want the pinned size", got, err)
	}
}
