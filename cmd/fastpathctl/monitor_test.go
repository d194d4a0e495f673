package main

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfobj"
	"github.com/fastpath-net/fastpath/internal/datapath/pkttest"
	"github.com/fastpath-net/fastpath/internal/datapath/policymap"
	"github.com/fastpath-net/fastpath/internal/testpriv"
)

// pinnedPolicyDrop pins tc_policy's maps under a new directory, as the
// agent pins them, and runs one packet its policy drops: endpoint 9,
// 10.0.1.1:1234 -> 192.0.2.1:443/TCP, egress denied.
func pinnedPolicyDrop(t *testing.T) (dir string) {
	t.Helper()
	testpriv.Require(t)
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("/sys/fs/bpf", "fp-test-monitor-")
	if err != nil {
		testpriv.Unavailable(t, "no bpffs: "+err.Error())
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Mkdir(filepath.Join(dir, "maps"), 0o700); err != nil {
		t.Fatal(err)
	}
	var objs bpfobj.TcpolicyObjects
	if err := bpfobj.LoadTcpolicyObjects(&objs, &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: filepath.Join(dir, "maps")}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { objs.Close() })
	// Test runs come from loopback (ifindex 1): make it an endpoint with
	// egress denied.
	if err := objs.FpEndpoints.Put(uint32(1), policymap.Endpoint{ID: 9, Flags: policymap.EnforceEgress, Identity: 300}); err != nil {
		t.Fatal(err)
	}
	world := policymap.IPCacheKeyOf(netip.MustParsePrefix("0.0.0.0/0"))
	if err := objs.FpIpcache.Put(world, policymap.IPCacheValue{Identity: 9}); err != nil {
		t.Fatal(err)
	}
	frame := pkttest.TCPFrame(pkttest.Flow{Src: netip.MustParseAddrPort("10.0.1.1:1234"), Dst: netip.MustParseAddrPort("192.0.2.1:443")}, pkttest.SYN, nil)
	if ret, err := objs.FpTcPolicy.Run(&ebpf.RunOptions{Data: frame, Repeat: 1}); err != nil || ret != 2 {
		t.Fatalf("run: %d %v, want a drop", ret, err)
	}
	return dir
}

// TestPolicyMonitor: `policy monitor` reads the ring pinned under
// --bpffs-dir, as the agent will pin it, and prints a drop the program
// made.
func TestPolicyMonitor(t *testing.T) {
	dir := pinnedPolicyDrop(t)
	var out, errOut bytes.Buffer
	if code := run([]string{"--bpffs-dir", dir, "policy", "monitor", "--drops", "--endpoint", "9", "-n", "1"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	want := "DROP  egress  endpoint 9  10.0.1.1:1234 (300) -> 192.0.2.1:443 (world-ipv4) tcp  policy-denied"
	if strings.TrimSpace(out.String()) != want {
		t.Errorf("got  %q\nwant %q", out.String(), want)
	}
	if code := run([]string{"--bpffs-dir", filepath.Join(dir, "nope"), "policy", "monitor", "-n", "1"}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "no verdict ring") {
		t.Errorf("missing ring: exit %d, %q", code, errOut.String())
	}
}
