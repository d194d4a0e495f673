package main

import (
	"strings"
	"testing"
	"time"
)

func TestCPUPerChange(t *testing.T) {
	// 1 s of CPU over 10 s with 10 changes, idle 20 ms/s: 100 ms raw,
	// (1 s - 200 ms) / 10 = 80 ms net.
	raw, net := cpuPerChange(time.Second, 10*time.Second, 10, 0.02)
	if raw != 100*time.Millisecond || net != 80*time.Millisecond {
		t.Fatalf("raw %s net %s", raw, net)
	}
	if _, net := cpuPerChange(10*time.Millisecond, 10*time.Second, 10, 0.02); net != 0 {
		t.Fatalf("net below zero: %s", net)
	}
	if raw, _ := cpuPerChange(time.Second, time.Second, 0, 0); raw != 0 {
		t.Fatal("no changes: want 0")
	}
}

func TestAgentSynced(t *testing.T) {
	log := strings.Join([]string{
		`time=2026-12-05T23:47:40.100Z level=INFO msg="attached per-packet load balancer" interface=h-client mode=tcx`,
		`time=2026-12-05T23:47:40.200Z level=INFO msg="Kubernetes caches synced" source=kubernetes took=51ms`,
		`time=2026-12-05T23:47:40.250Z level=INFO msg="kubernetes state received" services=101`,
		`time=2026-12-05T23:47:40.252Z level=INFO msg="datapath programmed" full=true services=101 took=1.8ms`,
	}, "\n")
	at, d, ok, err := agentSynced(log)
	if err != nil || !ok {
		t.Fatalf("ok %v err %v", ok, err)
	}
	if want := time.Date(2026, 12, 5, 23, 47, 40, 252e6, time.UTC); !at.Equal(want) || d.Sync != 1800*time.Microsecond || d.Informer != 51*time.Millisecond {
		t.Fatalf("at %s detail %+v", at, d)
	}
	if _, _, ok, err := agentSynced(strings.Join(strings.Split(log, "\n")[:3], "\n")); ok || err != nil {
		t.Fatalf("not yet programmed: ok %v err %v", ok, err)
	}
	if _, _, _, err := agentSynced(`time=2026-12-05T23:47:40.100Z level=ERROR msg="agent failed" error="boom"`); err == nil {
		t.Fatal("an agent error is not reported")
	}
}

func TestParseFlags(t *testing.T) {
	cfg, err := parseFlags([]string{"-quick"})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Ns) != 2 || cfg.Ns[1] != 1000 || cfg.Changes != 20 || len(cfg.Contenders) != 3 {
		t.Fatalf("quick: %+v", cfg)
	}
	if cfg, err = parseFlags([]string{"-quick", "-changes", "7", "-n", "10"}); err != nil || cfg.Changes != 7 || cfg.Ns[0] != 10 {
		t.Fatalf("explicit flags must win over -quick: %+v %v", cfg, err)
	}
	for _, bad := range [][]string{{"-n", "1000,100"}, {"-contenders", "ipvs"}, {"-changes", "0"}, {"-n", "x"}, {"extra"}} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
}

func TestDeadRun(t *testing.T) {
	if deadRun("fp-bc1-fp100-node", "fp-bc") { // PID 1 lives
		t.Error("PID 1 counted as dead")
	}
	if deadRun("fp-cp-1-x", "fp-bc") || deadRun("fp-bcx-node", "fp-bc") {
		t.Error("foreign or unparsable name counted")
	}
	if !deadRun("fp-bc2147483646-fp100-node", "fp-bc") {
		t.Error("a PID that cannot exist counted as alive")
	}
}

func TestReport(t *testing.T) {
	cfg := defaultConfig()
	res := &results{Cfg: cfg, LoadStart: "12.5 10 9", LoadEnd: "11 10 9", Created: map[int]time.Duration{10000: time.Minute}}
	res.Machine.NumCPU = 2
	res.Rows = []*result{
		{N: 10000, Contender: "fastpath", Load: "12.5 10 9", ColdStart: 3 * time.Second, Latencies: []time.Duration{time.Millisecond, 3 * time.Millisecond}, CPURaw: 2 * time.Millisecond},
		{N: 10000, Contender: "iptables", Err: "not programmed within 8m0s\nlog tail"},
	}
	md := string(markdown(res))
	for _, want := range []string{
		"| cold start to all programmed | < 2.00 s | 3.00 s | **missed** |",
		"| change visible, median | < 50.0 ms | 1.0 ms | met |",
		"| agent CPU per change (raw) | < 5.0 ms | 2.0 ms | met |",
		"| 10000 | iptables |  | FAILED: not programmed within 8m0s |",
		"busy with other work",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	csv := string(csvReport(res))
	if lines := strings.Split(strings.TrimSpace(csv), "\n"); len(lines) != 3 || !strings.HasPrefix(lines[1], "10000,fastpath,12.5,3000.00,") {
		t.Errorf("csv:\n%s", csv)
	}
}

func TestClusterIP(t *testing.T) {
	if got := clusterIP(0).String(); got != "10.96.0.16" {
		t.Errorf("clusterIP(0) = %s", got)
	}
	if got := clusterIP(300).String(); got != "10.96.1.60" {
		t.Errorf("clusterIP(300) = %s", got)
	}
	// The largest -n stays inside the service range 10.96.0.0/16.
	if got := clusterIP(50000 - 1); got.As4()[1] != 96 || got.As4()[0] != 10 {
		t.Errorf("clusterIP(49999) = %s", got)
	}
}
