package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestInstall runs the real binary as the init container does: the copy
// is byte-for-byte the binary, executable, answers VERSION as a plugin,
// and replaces an older copy; a missing directory is named.
func TestInstall(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "build", "fastpath-cni")
	if out, err := exec.CommandContext(t.Context(), "go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	binDir := filepath.Join(dir, "opt-cni-bin")
	if err := os.Mkdir(binDir, 0o755); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(binDir, "fastpath-cni")
	if err := os.WriteFile(dst, []byte("old version"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "install", binDir).CombinedOutput(); err != nil {
		t.Fatalf("install: %v\n%s", err, out)
	}
	want, _ := os.ReadFile(bin)
	got, err := os.ReadFile(dst)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("installed copy differs from the binary (%d vs %d bytes, %v)", len(got), len(want), err)
	}
	if st, _ := os.Stat(dst); st.Mode().Perm() != 0o755 {
		t.Errorf("mode %v; want 0755", st.Mode())
	}
	if entries, _ := os.ReadDir(binDir); len(entries) != 1 {
		t.Errorf("bin dir holds %v; want only fastpath-cni (no temporary file left)", entries)
	}
	cmd := exec.Command(dst)
	cmd.Env = append(os.Environ(), "CNI_COMMAND=VERSION")
	cmd.Stdin = strings.NewReader(`{"cniVersion":"1.1.0"}`)
	if out, err := cmd.Output(); err != nil || !strings.Contains(string(out), "supportedVersions") {
		t.Errorf("the installed plugin's VERSION: %v %s", err, out)
	}
	out, err := exec.Command(bin, "install", filepath.Join(dir, "missing")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "not a directory (mount the node's /opt/cni/bin there)") {
		t.Errorf("install into a missing directory: %v %s", err, out)
	}
}
