package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/fastpath-net/fastpath/internal/testpriv"
)

// TestRefusesToStartInOneLine points the agent at a node without what it
// needs (flags naming wrong paths; the machine's mounts are only read) and
// checks it exits with one line naming what is missing and how to fix it.
func TestRefusesToStartInOneLine(t *testing.T) {
	testpriv.Require(t)
	notMounted := t.TempDir()
	file := []string{"--services-file", "/dev/null"}
	for _, c := range []struct {
		name string
		args []string
		want []string
	}{
		{"no bpffs", append([]string{"--bpffs-dir", notMounted + "/fastpath"}, file...),
			[]string{"bpffs missing", notMounted, "mount -t bpf bpf /sys/fs/bpf"}},
		{"no cgroup2", append([]string{"--bpffs-dir", "/sys/fs/bpf/fp-preflight-cmd", "--cgroup", notMounted}, file...),
			[]string{"cgroup2 missing", "--cgroup " + notMounted, "mount -t cgroup2"}},
		{"cgroup2 path missing", append([]string{"--bpffs-dir", "/sys/fs/bpf/fp-preflight-cmd", "--cgroup", notMounted + "/gone"}, file...),
			[]string{"cgroup2 missing", "no such file or directory"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var stderr bytes.Buffer
			if code := run(c.args, &stderr); code != 1 {
				t.Fatalf("exit %d; want 1\n%s", code, stderr.String())
			}
			checkOneLine(t, stderr.String(), c.want)
			if _, err := os.Stat("/sys/fs/bpf/fp-preflight-cmd"); err == nil {
				t.Error("the agent created its pin dir before refusing to start")
			}
		})
	}
}

// TestRefusesToStartWithoutPermission runs the real binary as nobody: no
// BPF for an unprivileged user on this machine (unprivileged_bpf_disabled).
func TestRefusesToStartWithoutPermission(t *testing.T) {
	testpriv.Require(t)
	if data, err := os.ReadFile("/proc/sys/kernel/unprivileged_bpf_disabled"); err != nil || strings.TrimSpace(string(data)) == "0" {
		testpriv.Unavailable(t, "unprivileged BPF is allowed here, so an unprivileged agent is not refused")
	}
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} { // nobody must reach the binary
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := dir + "/fastpath-agent"
	if out, err := exec.CommandContext(t.Context(), "go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "--services-file", "/dev/null", "--bpffs-dir", "/sys/fs/bpf/fp-preflight-nobody")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("as nobody: %v; want exit 1\n%s", err, stderr.String())
	}
	checkOneLine(t, stderr.String(), []string{"permission denied using BPF", "run the agent as root", "privileged: true"})
}

func checkOneLine(t *testing.T, out string, want []string) {
	t.Helper()
	if strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "fastpath-agent: cannot start: ") {
		t.Fatalf("want exactly one line starting \"fastpath-agent: cannot start: \"; got:\n%s", out)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%q does not say %q", out, w)
		}
	}
}
