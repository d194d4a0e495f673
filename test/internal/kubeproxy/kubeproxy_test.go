package kubeproxy

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseKlogTime(t *testing.T) {
	ref := time.Date(2026, 12, 31, 23, 59, 0, 0, time.Local)
	got, ok := ParseKlogTime(`I1231 23:59:30.250000   77 proxier.go:649] "x"`, ref)
	if !ok || !got.Equal(time.Date(2026, 12, 31, 23, 59, 30, 250e6, time.Local)) {
		t.Fatalf("same day: %v %v", got, ok)
	}
	// Written after midnight on New Year: next year.
	got, ok = ParseKlogTime(`I0101 00:00:01.000001   77 x.go:1] "y"`, ref)
	if !ok || !got.Equal(time.Date(2027, 1, 1, 0, 0, 1, 1000, time.Local)) {
		t.Fatalf("new year: %v %v", got, ok)
	}
	if _, ok := ParseKlogTime("no klog header", ref); ok {
		t.Fatal("parsed a line without a header")
	}
}

func TestFirstSync(t *testing.T) {
	ref := time.Date(2026, 12, 5, 23, 0, 0, 0, time.Local)
	log := strings.Join([]string{
		`I1205 23:00:00.100000   7 proxier.go:631] "Not syncing iptables until Services and Endpoints have been received from master" ipFamily="IPv4"`,
		`I1205 23:00:01.000000   7 proxier.go:649] "SyncProxyRules complete" ipFamily="IPv6" elapsed="3ms"`,
		`I1205 23:00:02.500000   7 proxier.go:649] "SyncProxyRules complete" ipFamily="IPv4" elapsed="1.25s"`,
		`I1205 23:00:09.000000   7 proxier.go:649] "SyncProxyRules complete" ipFamily="IPv4" elapsed="20ms"`,
	}, "\n")
	at, el, ok, err := FirstSync(log, ref)
	if err != nil || !ok || el != 1250*time.Millisecond || !at.Equal(ref.Add(2500*time.Millisecond)) {
		t.Fatalf("got %v %v %v %v", at, el, ok, err)
	}
	if _, _, ok, err := FirstSync(strings.Split(log, "\n")[0], ref); ok || err != nil {
		t.Fatalf("no sync yet: ok %v err %v", ok, err)
	}
	failed := `I1205 23:00:02.400000   7 proxier.go:660] "Sync failed" ipFamily="IPv4" retryingTime="30s"` + "\n" + log
	if _, _, _, err := FirstSync(failed, ref); err == nil {
		t.Fatal("a failed first sync is not an error")
	}
}

func TestArgs(t *testing.T) {
	a := Config{Kubeconfig: "k", NodeName: "n", Mode: "nftables", ClusterCIDR: "10.0.0.0/8", MinSyncPeriod: time.Second}.Args()
	for _, want := range []string{"--proxy-mode=nftables", "--nftables-min-sync-period=1s", "--hostname-override=n", "--conntrack-max-per-core=0"} {
		if !slices.Contains(a, want) {
			t.Errorf("args lack %s: %v", want, a)
		}
	}
}
