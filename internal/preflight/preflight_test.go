package preflight

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/fastpath-net/fastpath/internal/testpriv"
)

// cgroup2Dir is where this machine mounts cgroup v2 (facts.md); only read.
const cgroup2Dir = "/sys/fs/cgroup/unified"

func TestCheckBPFFS(t *testing.T) {
	dir := t.TempDir() // tmpfs or a disk: not bpffs
	err := CheckBPFFS(dir + "/fastpath")
	if err == nil || !strings.Contains(err.Error(), "bpffs missing: --bpffs-dir "+dir+"/fastpath") ||
		!strings.Contains(err.Error(), "mount -t bpf bpf /sys/fs/bpf") {
		t.Errorf("pin dir on %s: %v; want what is missing and how to mount it", dir, err)
	}
	// A pin dir not created yet on a real bpffs is fine: its parent is.
	if err := CheckBPFFS("/sys/fs/bpf/fp-preflight-not-created/x"); err != nil {
		t.Errorf("a missing directory under /sys/fs/bpf: %v", err)
	}
}

func TestCheckCgroup2(t *testing.T) {
	for _, c := range []struct{ dir, want string }{
		{t.TempDir(), "is not a cgroup v2 directory"},
		{"/nonexistent/fp-preflight", "no such file or directory"},
	} {
		err := checkCgroup2(c.dir)
		if err == nil || !strings.Contains(err.Error(), "cgroup2 missing: --cgroup "+c.dir) || !strings.Contains(err.Error(), c.want) ||
			!strings.Contains(err.Error(), "mount -t cgroup2") {
			t.Errorf("--cgroup %s: %v; want %q and how to mount cgroup v2", c.dir, err, c.want)
		}
	}
	if _, err := os.Stat(cgroup2Dir); err != nil {
		testpriv.Unavailable(t, "no cgroup v2 at "+cgroup2Dir)
	}
	if err := checkCgroup2(cgroup2Dir); err != nil {
		t.Errorf("the real cgroup v2 mount: %v", err)
	}
}

// TestMissingFeaturesAreNamed simulates a kernel without two features: the
// error names both (and the failing probe's own error), in one line.
func TestMissingFeaturesAreNamed(t *testing.T) {
	fake := []Feature{
		{"present", func() error { return nil }},
		{"BPF_MAP_TYPE_LRU_HASH", func() error { return fmt.Errorf("lru: %w", ebpf.ErrNotSupported) }},
		{"bpf_redirect_neigh", func() error { return fmt.Errorf("helper: %w", ebpf.ErrNotSupported) }},
		{"odd", func() error { return errors.New("EINVAL") }},
	}
	err := checkFeatures(fake)
	want := "kernel feature missing: BPF_MAP_TYPE_LRU_HASH, bpf_redirect_neigh, odd (probe failed: EINVAL); "
	if err == nil || !strings.HasPrefix(err.Error(), want) || strings.Contains(err.Error(), "present") || strings.Contains(err.Error(), "\n") {
		t.Errorf("got %v\nwant prefix %q, one line", err, want)
	}
}

// TestThisKernelPasses: the real probes, permission and bpffs on this
// machine (root, 6.18) find nothing missing; with a bad pin dir and a bad
// cgroup, Check says both in one line.
func TestThisKernelPasses(t *testing.T) {
	testpriv.Require(t)
	if err := Check(Needs{PinDir: "/sys/fs/bpf/fp-preflight-test", Cgroup: cgroup2Dir}); err != nil {
		t.Fatalf("Check on this machine: %v", err)
	}
	dir := t.TempDir()
	err := Check(Needs{PinDir: dir, Cgroup: dir})
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "bpffs missing") || !strings.Contains(err.Error(), "cgroup2 missing") {
		t.Fatalf("bad bpffs and cgroup: %v; want both named in one line", err)
	}
	if _, err := os.Stat("/sys/fs/bpf/fp-preflight-test"); err == nil {
		t.Error("Check created the pin dir; it must not touch the node")
	}
}
