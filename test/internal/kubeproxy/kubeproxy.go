// Package kubeproxy runs the real kube-proxy (built by tools/ into the
// testenv bin directory) inside a test's node namespace, and reads its log.
// The conformance test and the control-path benchmark share it.
package kubeproxy

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/fastpath-net/fastpath/internal/nettopo"
	"github.com/fastpath-net/fastpath/test/internal/nsproc"
)

// Config is what differs between the users of kube-proxy.
type Config struct {
	Kubeconfig  string
	NodeName    string // --hostname-override: the Node it programs for
	Mode        string // "iptables" or "nftables"
	ClusterCIDR string
	// NodePortAddresses limits NodePorts (--nodeport-addresses); "": kube-proxy's default.
	NodePortAddresses string
	// MinSyncPeriod is --iptables-/--nftables-min-sync-period; 0: kube-proxy's default (1s).
	MinSyncPeriod time.Duration
}

// Args are kube-proxy's flags for c. Both servers bind to loopback inside the
// node namespace, and every global and conntrack setting is left alone: the
// namespace is a test's, and nf_conntrack_max is the machine's.
func (c Config) Args() []string {
	args := []string{
		"--kubeconfig=" + c.Kubeconfig,
		"--hostname-override=" + c.NodeName,
		"--proxy-mode=" + c.Mode,
		"--cluster-cidr=" + c.ClusterCIDR,
		"--metrics-bind-address=127.0.0.1:10249",
		"--healthz-bind-address=127.0.0.1:10256",
		"--conntrack-max-per-core=0",
		"--conntrack-tcp-timeout-established=0",
		"--conntrack-tcp-timeout-close-wait=0",
		"--iptables-localhost-nodeports=false",
		"--oom-score-adj=0",
		// --v=2 logs every sync ("SyncProxyRules complete").
		"--v=2",
	}
	if c.NodePortAddresses != "" {
		args = append(args, "--nodeport-addresses="+c.NodePortAddresses)
	}
	if c.MinSyncPeriod > 0 {
		args = append(args, fmt.Sprintf("--%s-min-sync-period=%s", c.Mode, c.MinSyncPeriod))
	}
	return args
}

// Start forks kube-proxy from thread, which must have entered node, and
// checks that it really runs in node's namespace (its rules must never reach
// another one); if not, it is stopped and Start fails.
func Start(thread *nsproc.Thread, node *nettopo.NS, dir, name, bin string, c Config) (*nsproc.Child, error) {
	switch c.Mode {
	case "iptables", "nftables":
	default:
		return nil, fmt.Errorf("kube-proxy mode %q: want iptables or nftables", c.Mode)
	}
	proc, err := thread.Start(dir, name, bin, c.Args())
	if err != nil {
		return nil, err
	}
	same, err := nsproc.SameNetns(proc.PID(), node)
	if err != nil || !same {
		proc.Stop(5 * time.Second)
		return nil, fmt.Errorf("SAFETY: kube-proxy (pid %d) is not in the node namespace %s (err %v); stopped it", proc.PID(), node.Name, err)
	}
	return proc, nil
}

// klogLine is the header of a klog line: severity, month, day, time.
//
//	I1205 23:50:01.123456   12345 proxier.go:649] "SyncProxyRules complete" ipFamily="IPv4" elapsed="1.2s"
var klogLine = regexp.MustCompile(`^([IWEF])(\d\d)(\d\d) (\d\d:\d\d:\d\d\.\d{6})\s`)

// ParseKlogTime reads the time of a klog line, which carries no year: it is
// taken from ref (a time shortly before the line was written), and a line
// dated more than a day before ref belongs to the next year.
func ParseKlogTime(line string, ref time.Time) (time.Time, bool) {
	m := klogLine.FindStringSubmatch(line)
	if m == nil {
		return time.Time{}, false
	}
	t, err := time.ParseInLocation("2006 0102 15:04:05.000000", fmt.Sprintf("%d %s%s %s", ref.Year(), m[2], m[3], m[4]), time.Local)
	if err != nil {
		return time.Time{}, false
	}
	if t.Before(ref.Add(-24 * time.Hour)) {
		t = t.AddDate(1, 0, 0)
	}
	return t, true
}

// FirstSync finds kube-proxy's first completed sync of the IPv4 rules in its
// log: the first "SyncProxyRules complete" after a sync that did not fail.
// It returns the line's time and the elapsed time kube-proxy reported.
func FirstSync(log string, ref time.Time) (at time.Time, elapsed time.Duration, ok bool, err error) {
	failed := false
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, `ipFamily="IPv6"`) {
			continue
		}
		switch {
		case strings.Contains(line, `"Sync failed"`):
			failed = true
		case strings.Contains(line, `"SyncProxyRules complete"`):
			if failed {
				return time.Time{}, 0, false, fmt.Errorf("kube-proxy's first sync failed: %s", line)
			}
			t, ok := ParseKlogTime(line, ref)
			if !ok {
				return time.Time{}, 0, false, fmt.Errorf("no klog time in %q", line)
			}
			if m := elapsedAttr.FindStringSubmatch(line); m != nil {
				elapsed, _ = time.ParseDuration(m[1])
			}
			return t, elapsed, true, nil
		}
	}
	return time.Time{}, 0, false, nil
}

var elapsedAttr = regexp.MustCompile(`elapsed="([^"]+)"`)
