package socklb

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfobj"
	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
	"github.com/fastpath-net/fastpath/internal/datapath/policymap"
)

// rounds is how many connections the balancing tests make. With two
// backends picked at random, one backend is missed with probability 2^-31.
const rounds = 32

func backendAddr(name string, port uint16) string {
	return fmt.Sprintf("%s:%d", backendAddrs[name], port)
}

func TestTCPConnectBalancesAndShowsVIP(t *testing.T) {
	e := newEnv(t)
	e.setService(vipTCP, lbmap.ProtoTCP, 1, "b1-tcp", "b2-tcp")
	c := e.startClient(e.cgroup)
	before := e.metric(metricSockConnect)

	picked := map[string]int{}
	for range rounds {
		r := c.do("tcp", vipTCP.String())
		if r.Errno != "" {
			t.Fatalf("connect %s: %s (%s)", vipTCP, r.Errno, r.Err)
		}
		if r.Peer != vipTCP.String() {
			t.Errorf("getpeername = %s, want the VIP %s", r.Peer, vipTCP)
		}
		picked[r.Body]++
	}
	if picked["b1"] == 0 || picked["b2"] == 0 || len(picked) != 2 {
		t.Errorf("backends picked %v, want both b1 and b2", picked)
	}
	if got := e.metric(metricSockConnect) - before; got != rounds {
		t.Errorf("sock_connect counter moved by %d, want %d", got, rounds)
	}
	if got := e.srv.total(); got != rounds {
		t.Errorf("servers saw %d connections, want %d", got, rounds)
	}
}

func TestUDPSendtoBalancesAndRepliesComeFromVIP(t *testing.T) {
	e := newEnv(t)
	e.setService(vipUDP, lbmap.ProtoUDP, 2, "b1-udp", "b2-udp")
	c := e.startClient(e.cgroup)
	before := e.metric(metricSockConnect)

	picked := map[string]int{}
	for range rounds {
		r := c.do("udp", vipUDP.String())
		if r.Errno != "" {
			t.Fatalf("sendto/recvfrom %s: %s (%s)", vipUDP, r.Errno, r.Err)
		}
		if r.From != vipUDP.String() {
			t.Errorf("recvfrom source = %s, want the VIP %s", r.From, vipUDP)
		}
		picked[r.Body]++
	}
	if picked["b1"] == 0 || picked["b2"] == 0 || len(picked) != 2 {
		t.Errorf("backends picked %v, want both b1 and b2", picked)
	}
	if got := e.metric(metricSockConnect) - before; got != rounds {
		t.Errorf("sock_connect counter moved by %d, want %d", got, rounds)
	}
}

func TestConnectedUDP(t *testing.T) {
	e := newEnv(t)
	e.setService(vipUDP, lbmap.ProtoUDP, 2, "b1-udp", "b2-udp")
	c := e.startClient(e.cgroup)
	before := e.metric(metricSockConnect)

	const n = 4
	for range n {
		r := c.do("udpconn", vipUDP.String())
		if r.Errno != "" {
			t.Fatalf("connected UDP to %s: %s (%s)", vipUDP, r.Errno, r.Err)
		}
		if r.Peer != vipUDP.String() {
			t.Errorf("getpeername = %s, want the VIP %s", r.Peer, vipUDP)
		}
		if r.From != vipUDP.String() {
			t.Errorf("recvfrom source = %s, want the VIP %s", r.From, vipUDP)
		}
		if r.Body != "b1" && r.Body != "b2" {
			t.Errorf("reply %q, want b1 or b2", r.Body)
		}
	}
	// send() on a connected socket does not run sendmsg4: one per connect.
	if got := e.metric(metricSockConnect) - before; got != n {
		t.Errorf("sock_connect counter moved by %d, want %d", got, n)
	}
}

func TestNoBackendsRefusesWithECONNREFUSED(t *testing.T) {
	e := newEnv(t)
	e.setService(vipEmptyT, lbmap.ProtoTCP, 3)
	e.setService(vipEmptyU, lbmap.ProtoUDP, 4)
	c := e.startClient(e.cgroup)
	refusedBefore := e.metric(metricSockNoBackend)
	connectBefore := e.metric(metricSockConnect)

	for _, tc := range []struct{ op, addr string }{
		{"tcp", vipEmptyT.String()},
		{"udp", vipEmptyU.String()},
		{"udpconn", vipEmptyU.String()},
	} {
		r := c.do(tc.op, tc.addr)
		if r.Errno != "ECONNREFUSED" {
			t.Errorf("%s %s: got %q (%s), want ECONNREFUSED", tc.op, tc.addr, r.Errno, r.Err)
		}
	}
	if got := e.metric(metricSockNoBackend) - refusedBefore; got != 3 {
		t.Errorf("sock_no_backend counter moved by %d, want 3", got)
	}
	if got := e.metric(metricSockConnect) - connectBefore; got != 0 {
		t.Errorf("sock_connect counter moved by %d, want 0", got)
	}
	if got := e.srv.total(); got != 0 {
		t.Errorf("servers saw %d connections or datagrams, want 0", got)
	}
	// Each refusal is a verdict record naming the service (rev-nat id),
	// without a source: the socket is not bound yet.
	r, err := ringbuf.NewReader(e.objs.FpVerdicts)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var got []string
	for {
		r.SetDeadline(time.Now().Add(50 * time.Millisecond))
		rec, err := r.Read()
		if err != nil {
			break
		}
		v, err := policymap.DecodeVerdict(rec.RawSample)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s %s:%d/%d rev %d from %s", policymap.ReasonName(v.Reason),
			netip.AddrFrom16(v.Daddr).Unmap(), v.Dport, v.Proto, v.Cookie, netip.AddrFrom16(v.Saddr).Unmap()))
	}
	want := []string{
		fmt.Sprintf("no-backend %s/6 rev 3 from 0.0.0.0", vipEmptyT),
		fmt.Sprintf("no-backend %s/17 rev 4 from 0.0.0.0", vipEmptyU),
		fmt.Sprintf("no-backend %s/17 rev 4 from 0.0.0.0", vipEmptyU),
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("verdict records\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestOutsideCgroupIsNotTranslated(t *testing.T) {
	e := newEnv(t)
	e.setService(vipTCP, lbmap.ProtoTCP, 1, "b1-tcp", "b2-tcp")
	e.setService(vipUDP, lbmap.ProtoUDP, 2, "b1-udp", "b2-udp")
	outside := e.startClient("")
	before := e.metric(metricSockConnect)

	// The VIP has no route in the namespace: untranslated, it is unreachable.
	for _, tc := range []struct{ op, addr string }{
		{"tcp", vipTCP.String()},
		{"udp", vipUDP.String()},
		{"udpconn", vipUDP.String()},
	} {
		r := outside.do(tc.op, tc.addr)
		if r.Errno == "" {
			t.Errorf("%s %s from outside the cgroup reached backend %q", tc.op, tc.addr, r.Body)
		} else if r.Errno != "ENETUNREACH" {
			t.Logf("%s %s from outside the cgroup failed with %s (%s)", tc.op, tc.addr, r.Errno, r.Err)
		}
	}
	if got := e.metric(metricSockConnect) - before; got != 0 {
		t.Errorf("sock_connect counter moved by %d for a process outside the cgroup", got)
	}
	if got := e.srv.total(); got != 0 {
		t.Errorf("servers saw %d connections or datagrams from outside the cgroup", got)
	}

	// The same request from inside the cgroup is translated.
	inside := e.startClient(e.cgroup)
	if r := inside.do("tcp", vipTCP.String()); r.Errno != "" {
		t.Errorf("control: connect from inside the cgroup: %s (%s)", r.Errno, r.Err)
	}
}

// A slot naming an absent backend (a reconciler mid-update) leaves the VIP
// untranslated for the TC datapath, and is counted.
func TestMissingBackendLeavesVIPAlone(t *testing.T) {
	e := newEnv(t)
	e.setService(vipTCP, lbmap.ProtoTCP, 1, "b1-tcp")
	if err := e.lb.Backends.Delete([]uint32{backendIDs["b1-tcp"]}); err != nil {
		t.Fatal(err)
	}
	c := e.startClient(e.cgroup)
	gone := e.metric(metricBackendGone)
	connect := e.metric(metricSockConnect)

	if r := c.do("tcp", vipTCP.String()); r.Errno != "ENETUNREACH" {
		t.Errorf("connect with the backend missing: got %q (%s), want the untranslated ENETUNREACH", r.Errno, r.Err)
	}
	if got := e.metric(metricBackendGone) - gone; got != 1 {
		t.Errorf("backend_gone counter moved by %d, want 1", got)
	}
	if got := e.metric(metricSockConnect) - connect; got != 0 {
		t.Errorf("sock_connect counter moved by %d, want 0", got)
	}
}

// A socket whose service has gone, or whose VIP now belongs to another
// service, shows the backend it is really connected to.
func TestStaleRevNatShowsBackend(t *testing.T) {
	e := newEnv(t)
	e.setService(vipTCP, lbmap.ProtoTCP, 1, "b1-tcp", "b2-tcp")
	c := e.startClient(e.cgroup)

	r := c.do("tcp", vipTCP.String())
	if r.Errno != "" || r.Peer != vipTCP.String() {
		t.Fatalf("connect: %+v, want success with peer %s", r, vipTCP)
	}
	e.deleteService(vipTCP, lbmap.ProtoTCP)
	if p := c.do("peer", ""); p.Peer != backendAddr(r.Body, backendTCPPort) {
		t.Errorf("after the service was deleted, getpeername = %q (%s), want backend %s",
			p.Peer, p.Err, backendAddr(r.Body, backendTCPPort))
	}

	e.setService(vipTCP, lbmap.ProtoTCP, 1, "b1-tcp", "b2-tcp")
	r = c.do("tcp", vipTCP.String())
	if r.Errno != "" || r.Peer != vipTCP.String() {
		t.Fatalf("connect: %+v, want success with peer %s", r, vipTCP)
	}
	e.setService(vipTCP, lbmap.ProtoTCP, 99, "b1-tcp", "b2-tcp")
	if p := c.do("peer", ""); p.Peer != backendAddr(r.Body, backendTCPPort) {
		t.Errorf("after the VIP moved to rev_nat_id 99, getpeername = %q (%s), want backend %s",
			p.Peer, p.Err, backendAddr(r.Body, backendTCPPort))
	}
}

type linkState struct {
	id     link.ID
	prog   ebpf.ProgramID
	cgroup uint64
}

func pinnedLinks(t *testing.T, dir string) map[string]linkState {
	t.Helper()
	out := map[string]linkState{}
	for _, name := range PinNames() {
		l, err := link.LoadPinnedLink(filepath.Join(dir, name), nil)
		if err != nil {
			t.Fatalf("pinned link %s: %v", name, err)
		}
		info, err := l.Info()
		l.Close()
		if err != nil || info.Cgroup() == nil {
			t.Fatalf("pinned link %s: info %v, %v", name, info, err)
		}
		out[name] = linkState{id: info.ID, prog: info.Program, cgroup: info.Cgroup().CgroupId}
	}
	return out
}

// holdPinnedLinks keeps the links open until the test ends, as an old agent
// still running would: detaching must work all the same.
func holdPinnedLinks(t *testing.T, dir string) {
	t.Helper()
	for _, name := range PinNames() {
		l, err := link.LoadPinnedLink(filepath.Join(dir, name), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
	}
}

func progIDs(t *testing.T, objs *bpfobj.SocklbObjects) map[string]ebpf.ProgramID {
	t.Helper()
	out := map[string]ebpf.ProgramID{}
	for _, h := range hooks {
		info, err := h.prog(&objs.SocklbPrograms).Info()
		if err != nil {
			t.Fatal(err)
		}
		id, ok := info.ID()
		if !ok {
			t.Fatalf("program %s: kernel does not report its id", h.name)
		}
		out[h.name] = id
	}
	return out
}

// A restarted agent loads new programs and attaches them again: the pinned
// links must be updated in place (same link ids), never detached.
func TestReattachUpdatesLinksInPlace(t *testing.T) {
	e := newEnv(t)
	before := pinnedLinks(t, e.linkDir)
	next := loadObjects(t, e.pinDir)
	if err := Attach(next, e.cgroup, e.linkDir); err != nil {
		t.Fatalf("re-attach: %v", err)
	}
	after := pinnedLinks(t, e.linkDir)
	want := progIDs(t, next)
	for name, b := range before {
		a := after[name]
		if a.id != b.id {
			t.Errorf("%s: link id %d became %d: the link was replaced, not updated", name, b.id, a.id)
		}
		if a.prog != want[name] {
			t.Errorf("%s: link runs program %d, want the new program %d", name, a.prog, want[name])
		}
	}

	e.setService(vipTCP, lbmap.ProtoTCP, 1, "b1-tcp", "b2-tcp")
	c := e.startClient(e.cgroup)
	if r := c.do("tcp", vipTCP.String()); r.Errno != "" || r.Peer != vipTCP.String() {
		t.Errorf("connect after re-attach: %+v", r)
	}
}

func TestAttachToAnotherCgroupReplacesLinks(t *testing.T) {
	e := newEnv(t)
	e.setService(vipTCP, lbmap.ProtoTCP, 1, "b1-tcp", "b2-tcp")
	before := pinnedLinks(t, e.linkDir)
	holdPinnedLinks(t, e.linkDir)
	other := newCgroup(t, filepath.Base(e.cgroup)+"-b")
	if err := Attach(e.objs, other, e.linkDir); err != nil {
		t.Fatalf("attach to %s: %v", other, err)
	}
	otherID, err := cgroupID(other)
	if err != nil {
		t.Fatal(err)
	}
	for name, a := range pinnedLinks(t, e.linkDir) {
		if a.cgroup != otherID {
			t.Errorf("%s: link is on cgroup %d, want %d", name, a.cgroup, otherID)
		}
		if a.id == before[name].id {
			t.Errorf("%s: link id %d kept across a cgroup change", name, a.id)
		}
	}
	if _, err := os.Stat(filepath.Join(e.linkDir, PinNames()[0]+"_new")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary pin left behind: %v", err)
	}

	if r := e.startClient(e.cgroup).do("tcp", vipTCP.String()); r.Errno == "" {
		t.Errorf("old cgroup is still translated: reached %q", r.Body)
	}
	if r := e.startClient(other).do("tcp", vipTCP.String()); r.Errno != "" || r.Peer != vipTCP.String() {
		t.Errorf("new cgroup is not translated: %+v", r)
	}
}

func TestDetachRemovesPinsAndTranslation(t *testing.T) {
	e := newEnv(t)
	e.setService(vipTCP, lbmap.ProtoTCP, 1, "b1-tcp", "b2-tcp")
	c := e.startClient(e.cgroup)
	if r := c.do("tcp", vipTCP.String()); r.Errno != "" {
		t.Fatalf("control: connect before detach: %s (%s)", r.Errno, r.Err)
	}
	holdPinnedLinks(t, e.linkDir)
	if err := Detach(e.linkDir); err != nil {
		t.Fatalf("detach: %v", err)
	}
	for _, name := range PinNames() {
		if _, err := os.Stat(filepath.Join(e.linkDir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("pin %s still there after detach (%v)", name, err)
		}
	}
	before := e.metric(metricSockConnect)
	if r := c.do("tcp", vipTCP.String()); r.Errno == "" {
		t.Errorf("connect after detach was still translated to %q", r.Body)
	}
	if got := e.metric(metricSockConnect) - before; got != 0 {
		t.Errorf("sock_connect counter moved by %d after detach", got)
	}
	if err := Detach(e.linkDir); err != nil {
		t.Errorf("second detach: %v", err)
	}
}

func TestAttachRejectsBadArguments(t *testing.T) {
	if err := Attach(nil, "/sys/fs/cgroup/unified", t.TempDir()); err == nil {
		t.Error("attach with nil objects succeeded")
	}
	err := Attach(&bpfobj.SocklbObjects{}, t.TempDir(), t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "cgroup v2") {
		t.Errorf("attach to a plain directory: err = %v, want a cgroup v2 error", err)
	}
}
