// Package preflight checks, before the agent touches the datapath, that the
// node gives it what it needs: a bpf filesystem for the pins, a cgroup v2
// directory for the socket load balancer, the permission to use BPF, and
// the kernel features the programs use (probed, never guessed from the
// kernel version). Each failure is one sentence naming what is missing and
// how to fix it, so the agent can refuse to start with one line.
package preflight

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Filesystem magic numbers (statfs(2)).
const (
	bpfFSMagic   = 0xcafe4a11
	cgroup2Magic = 0x63677270
)

// Needs is what the agent is configured to use.
type Needs struct {
	PinDir string // bpffs directory of the pins (it may not exist yet)
	Cgroup string // cgroup v2 directory of the socket LB; "" = off
}

// Feature is one kernel capability the datapath uses. Probe returns an
// error wrapping ebpf.ErrNotSupported when the kernel lacks it.
type Feature struct {
	Name  string
	Probe func() error
}

// Features are probed by Check; tests replace the list to simulate an old
// kernel.
var Features = []Feature{
	{"BPF_PROG_TYPE_SCHED_CLS (tc_lb, tc_policy)", func() error { return features.HaveProgramType(ebpf.SchedCLS) }},
	{"BPF_PROG_TYPE_CGROUP_SOCK_ADDR (socket load balancing)", func() error { return features.HaveProgramType(ebpf.CGroupSockAddr) }},
	{"BPF_MAP_TYPE_LRU_HASH (conntrack, affinity)", func() error { return features.HaveMapType(ebpf.LRUHash) }},
	{"BPF_MAP_TYPE_LPM_TRIE (source ranges, no-masquerade CIDRs, ipcache)", func() error { return features.HaveMapType(ebpf.LPMTrie) }},
	{"BPF_MAP_TYPE_PERCPU_ARRAY (datapath counters)", func() error { return features.HaveMapType(ebpf.PerCPUArray) }},
	{"bpf_fib_lookup in tc programs (NodePort and masquerade redirects)", func() error {
		return features.HaveProgramHelper(ebpf.SchedCLS, asm.FnFibLookup)
	}},
	{"bpf_redirect_neigh in tc programs (masquerade redirects)", func() error {
		return features.HaveProgramHelper(ebpf.SchedCLS, asm.FnRedirectNeigh)
	}},
}

// Check runs every check that applies to n and returns nil or one error
// whose message is a single line: the failures, joined with "; ".
func Check(n Needs) error {
	var msgs []string
	if err := CheckBPFFS(n.PinDir); err != nil {
		msgs = append(msgs, err.Error())
	}
	if n.Cgroup != "" {
		if err := checkCgroup2(n.Cgroup); err != nil {
			msgs = append(msgs, err.Error())
		}
	}
	// Without the permission every feature probe fails too: say the
	// cause once.
	if err := checkPermission(); err != nil {
		msgs = append(msgs, err.Error())
	} else if err := checkFeatures(Features); err != nil {
		msgs = append(msgs, err.Error())
	}
	if len(msgs) == 0 {
		return nil
	}
	return errors.New(strings.Join(msgs, "; "))
}

// CheckBPFFS: the pin directory, or its nearest existing parent, must be
// on a bpf filesystem, or pins vanish with the agent (or cannot be made).
func CheckBPFFS(dir string) error {
	existing := dir
	for {
		if _, err := os.Stat(existing); err == nil {
			break
		}
		parent := filepath.Dir(existing)
		if parent == existing {
			break
		}
		existing = parent
	}
	var st unix.Statfs_t
	if err := unix.Statfs(existing, &st); err != nil || uint32(st.Type) != bpfFSMagic {
		return fmt.Errorf("bpffs missing: --bpffs-dir %s is not on a bpf filesystem (%s is not bpffs); "+
			"mount it with `mount -t bpf bpf /sys/fs/bpf` (in a pod: a hostPath volume of /sys/fs/bpf with mountPropagation: Bidirectional)",
			dir, existing)
	}
	return nil
}

// checkCgroup2: the socket LB attaches to a cgroup v2 directory; a v1
// hierarchy or a plain directory would take the attach and never run it.
func checkCgroup2(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("cgroup2 missing: --cgroup %s: %v; mount cgroup v2 (`mount -t cgroup2 none /sys/fs/cgroup`) "+
			"and point --cgroup at it, or leave --cgroup empty to turn socket load balancing off", dir, err)
	}
	if st.Type != cgroup2Magic {
		return fmt.Errorf("cgroup2 missing: --cgroup %s is not a cgroup v2 directory (filesystem type %#x); mount cgroup v2 "+
			"(`mount -t cgroup2 none /sys/fs/cgroup`) and point --cgroup at it, or leave --cgroup empty to turn socket load balancing off",
			dir, st.Type)
	}
	return nil
}

// checkPermission creates and frees the smallest map there is.
func checkPermission() error {
	err := rlimit.RemoveMemlock()
	if err == nil {
		var m *ebpf.Map
		m, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
		if err == nil {
			return m.Close()
		}
	}
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return fmt.Errorf("permission denied using BPF (%v): run the agent as root with CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON "+
			"and CAP_SYS_ADMIN (the DaemonSet's privileged: true)", err)
	}
	return fmt.Errorf("cannot create a BPF map (%v): is the kernel built with CONFIG_BPF_SYSCALL?", err)
}

// checkFeatures names every missing feature in one error.
func checkFeatures(fs []Feature) error {
	var missing []string
	for _, f := range fs {
		err := f.Probe()
		switch {
		case err == nil:
		case errors.Is(err, ebpf.ErrNotSupported):
			missing = append(missing, f.Name)
		default:
			missing = append(missing, fmt.Sprintf("%s (probe failed: %v)", f.Name, err))
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("kernel feature missing: %s; fastpath needs a kernel with these BPF features (Linux 5.10 or later has them all)",
		strings.Join(missing, ", "))
}
