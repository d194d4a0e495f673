// Package lab brings up and tears down the local fastpath lab behind
// `make lab`: a real control plane (etcd, kube-apiserver,
// kube-controller-manager) and N nodes as fp- network namespaces on an
// underlay bridge, a fastpath-agent and a fastpath-bgp per node, demo pods and Services, and a
// table of checks of what works. Everything it starts is recorded by PID in
// StateDir, so `make lab-down` ends exactly that.
package lab

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Fixed names, so `make lab-down` finds everything even without the state
// file. Variables only so that TestLabUpDown can run beside a user's lab.
var (
	Base     = "fp-lab"
	StateDir = "/run/fastpath-lab"
	PinDir   = "/sys/fs/bpf/fastpath-lab"
)

// Proc is a process the lab started. Start is its start time in clock ticks
// after boot (/proc/PID/stat field 22): with the PID it names the process
// for sure, so a PID the kernel reused is never signalled.
type Proc struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start"`
}

// State is what `up` leaves behind for `down` and for a second `up`.
type State struct {
	Nodes       int             `json:"nodes"`
	RoutingMode string          `json:"routingMode"`
	Processes   map[string]Proc `json:"processes"` // name -> process
	Started     time.Time       `json:"started"`
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

// procStat returns a process's state letter and start time from
// /proc/PID/stat. The command name (field 2) may hold spaces and
// parentheses, so fields are counted after its closing parenthesis.
func procStat(pid int) (state byte, start uint64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); field 22 (starttime) is f[19].
	if len(f) < 20 || len(f[0]) != 1 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	return f[0][0], start, err
}

// procOf names a process just started.
func procOf(pid int) (Proc, error) {
	_, start, err := procStat(pid)
	return Proc{PID: pid, Start: start}, err
}

// alive reports whether p still runs. It reads the start time, not
// /proc/PID/cmdline: the command line is empty between fork and the new
// image's first page, so a process just started would look dead. A zombie
// (exited, not yet reaped) is dead.
func alive(p Proc) bool {
	state, start, err := procStat(p.PID)
	return err == nil && start == p.Start && state != 'Z' && state != 'X'
}

// stop ends a process we started: SIGTERM, then SIGKILL after 5 seconds,
// and returns once it is gone (a killed process is gone only once the
// kernel has torn it down; down's checks must not see it still running).
func stop(p Proc) error {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		if !alive(p) {
			return nil
		}
		if err := syscall.Kill(p.PID, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			return err
		}
		for i := 0; i < 50 && alive(p); i++ {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if alive(p) {
		return fmt.Errorf("pid %d still runs 5 s after SIGKILL", p.PID)
	}
	return nil
}
