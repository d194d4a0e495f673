package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/fastpath-net/fastpath/internal/datapath"
	"github.com/fastpath-net/fastpath/internal/nettopo"
)

// collectLeftovers removes the network namespaces, bpffs directories and cgroups of
// benchmark runs that died without cleaning up: their names carry the PID,
// and their processes died with them (Pdeathsig). The programs attached
// inside a namespace go with it.
func collectLeftovers() {
	prefix := nettopo.Prefix + "bc"
	if entries, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range entries {
			if deadRun(e.Name(), prefix) {
				_ = nettopo.DeleteNS(e.Name())
			}
		}
	}
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/bpf", prefix+"*"))
	for _, d := range dirs {
		if deadRun(filepath.Base(d), prefix) {
			_ = datapath.Uninstall(d)
		}
	}
	cgroups, _ := filepath.Glob(filepath.Join(cgroupRoot, prefix+"*"))
	for _, d := range cgroups {
		if deadRun(filepath.Base(d), prefix) {
			_ = os.Remove(d)
		}
	}
}

// deadRun reports whether name is prefix<pid>-... of a process that is gone.
func deadRun(name, prefix string) bool {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return false
	}
	pidStr, _, _ := strings.Cut(rest, "-")
	pid, err := strconv.Atoi(pidStr)
	if err != nil || pid == os.Getpid() {
		return false
	}
	return syscall.Kill(pid, 0) == syscall.ESRCH
}
