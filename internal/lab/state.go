// Package lab brings up and tears down the local fastpath lab: fp- network
// namespaces for a node, a client and web backends, the real agent on the
// node, demo services, and checks of what works.
package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Fixed names, so `make lab-down` finds everything even without the state file.
const (
	Base      = "fp-lab"
	StateDir  = "/run/fastpath-lab"
	PinDir    = "/sys/fs/bpf/fastpath-lab"
	CgroupDir = "/sys/fs/cgroup/unified/fp-lab"
	VIP       = "10.96.0.10"
	EmptyVIP  = "10.96.0.20"
)

// Backends are the demo web pods.
var Backends = []string{"web1", "web2", "web3"}

// State is what `up` leaves behind for `down` and for a second `up`.
type State struct {
	Namespaces []string       `json:"namespaces"`
	Processes  map[string]int `json:"processes"` // name -> PID
	Interfaces []string       `json:"interfaces"`
	Started    time.Time      `json:"started"`
}

func statePath() string { return filepath.Join(StateDir, "state.json") }

func loadState() (*State, error) {
	b, err := os.ReadFile(statePath())
	if err != nil {
		return nil, err
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", statePath(), err)
	}
	return &st, nil
}

func (st *State) save() error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(statePath(), b, 0o644)
}

// alive reports whether pid still runs a fastpath binary we started; a
// recycled PID that runs something else is never signalled.
func alive(pid int) bool {
	cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && strings.Contains(string(cmd), "fastpath")
}

// stop ends a process we started: SIGTERM, then SIGKILL after 5 seconds.
func stop(pid int) error {
	if !alive(pid) {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	for i := 0; i < 50; i++ {
		if !alive(pid) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return syscall.Kill(pid, syscall.SIGKILL)
}
