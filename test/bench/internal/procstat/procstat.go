// Package procstat reads what the benchmarks report about processes and the
// machine from /proc: a process's CPU time and memory, the load average and
// a description of the machine.
package procstat

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// CPUTime is a process's CPU time (user + system).
type CPUTime struct {
	Self time.Duration
	// Children is the CPU time of its children that it has waited for
	// (cutime + cstime): kube-proxy's iptables-restore and nft runs.
	Children time.Duration
}

// Total is Self + Children.
func (c CPUTime) Total() time.Duration { return c.Self + c.Children }

// Sub is the CPU time used between b and c.
func (c CPUTime) Sub(b CPUTime) CPUTime {
	return CPUTime{Self: c.Self - b.Self, Children: c.Children - b.Children}
}

// CPU reads /proc/PID/stat.
func CPU(pid int) (CPUTime, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return CPUTime{}, err
	}
	c, err := ParseStat(string(b))
	if err != nil {
		return CPUTime{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return c, nil
}

// ParseStat reads utime, stime, cutime and cstime from the text of a
// /proc/PID/stat file.
func ParseStat(s string) (CPUTime, error) {
	// The command name is in parentheses and may contain spaces and
	// parentheses: fields are counted after the last ')'. State is field 3,
	// utime 14, stime 15, cutime 16, cstime 17.
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return CPUTime{}, errors.New("unexpected format: no ')'")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 15 {
		return CPUTime{}, fmt.Errorf("unexpected format: %d fields after the command", len(f))
	}
	var v [4]uint64
	for k := range v {
		n, err := strconv.ParseUint(f[11+k], 10, 64)
		if err != nil {
			return CPUTime{}, fmt.Errorf("field %d: %w", 14+k, err)
		}
		v[k] = n
	}
	return CPUTime{Self: ticks(v[0] + v[1]), Children: ticks(v[2] + v[3])}, nil
}

// ticks converts clock ticks: USER_HZ is 100 on Linux.
func ticks(n uint64) time.Duration { return time.Duration(n) * 10 * time.Millisecond }

// Mem returns VmRSS and VmHWM of pid, in bytes.
func Mem(pid int) (rss, hwm uint64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 || fields[2] != "kB" {
			continue
		}
		v, err := strconv.ParseUint(fields[1], 10, 64)
		if err != nil {
			continue
		}
		switch fields[0] {
		case "VmRSS:":
			rss = v << 10
		case "VmHWM:":
			hwm = v << 10
		}
	}
	if rss == 0 {
		return 0, 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
	}
	return rss, hwm, sc.Err()
}

// CPUStat is the machine-wide CPU time from /proc/stat, in USER_HZ ticks.
type CPUStat struct{ total, idle, softirq, steal uint64 }

// ReadCPUStat reads the "cpu" line of /proc/stat.
func ReadCPUStat() (CPUStat, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return CPUStat{}, err
	}
	line := FirstLine(string(b), "cpu ")
	f := strings.Fields(line)
	if len(f) < 9 {
		return CPUStat{}, fmt.Errorf("/proc/stat: unexpected cpu line %q", line)
	}
	var v [10]uint64
	for i := 1; i < len(f) && i <= 10; i++ {
		v[i-1], _ = strconv.ParseUint(f[i], 10, 64)
	}
	// user nice system idle iowait irq softirq steal guest guest_nice;
	// guest time is already part of user.
	st := CPUStat{idle: v[3] + v[4], softirq: v[6], steal: v[7]}
	for _, x := range v[:8] {
		st.total += x
	}
	return st, nil
}

// BusyPct is the share of all CPUs that was not idle between a and b, and
// the shares spent in softirq and stolen by the hypervisor.
func BusyPct(a, b CPUStat) (busy, softirq, steal float64) {
	d := float64(b.total - a.total)
	if d <= 0 {
		return 0, 0, 0
	}
	return 100 * (d - float64(b.idle-a.idle)) / d, 100 * float64(b.softirq-a.softirq) / d, 100 * float64(b.steal-a.steal) / d
}

// LoadAvg is the 1, 5 and 15 minute load average, "?" when unknown.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// Machine describes where a benchmark ran.
type Machine struct {
	CPU, Kernel, GoVersion string
	NumCPU                 int
	MemTotal               string
}

// DescribeMachine reads the CPU model, kernel and memory.
func DescribeMachine() Machine {
	m := Machine{CPU: "unknown", NumCPU: runtime.NumCPU(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		if l := FirstLine(string(b), "model name"); l != "" {
			if _, v, ok := strings.Cut(l, ":"); ok {
				m.CPU = strings.TrimSpace(v)
			}
		}
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Sysname[:]) + " " + unix.ByteSliceToString(u.Release[:])
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if l := FirstLine(string(b), "MemTotal"); l != "" {
			f := strings.Fields(l)
			if len(f) >= 2 {
				if kb, err := strconv.ParseUint(f[1], 10, 64); err == nil {
					m.MemTotal = fmt.Sprintf("%.0f GiB", float64(kb)/(1<<20))
				}
			}
		}
	}
	return m
}

// FirstLine is the first line of s that contains substr, or "".
func FirstLine(s, substr string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			return l
		}
	}
	return ""
}

// Tail is the last n bytes of s, marked as cut when it was.
func Tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
