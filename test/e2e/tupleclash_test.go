package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fastpath-net/fastpath/internal/ctl"
	"github.com/fastpath-net/fastpath/internal/nettopo"
)

// clientPort is the source port the tests below make the client reuse.
const clientPort = 40123

// clashVIP is the address of the i-th of the services that share a backend.
func clashVIP(i int) string { return fmt.Sprintf("10.96.0.%d", 40+i) }

// sharedServices is n ClusterIP services on port 81 whose only backend is
// the peer server of host, which closes every connection first.
func (l *lab) sharedServices(n int, host string) string {
	var b strings.Builder
	b.WriteString("services:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - name: shared-%d\n    namespace: demo\n    clusterIP: %s\n", i, clashVIP(i))
		fmt.Fprintf(&b, "    ports:\n      - {port: 81, protocol: TCP, targetPort: %d}\n", peerPort)
		fmt.Fprintf(&b, "    backends:\n      - address: %s\n", l.backendAddr(host))
	}
	return b.String()
}

// dialFrom connects from port of the namespace's address to addr, with
// SO_REUSEADDR as a client that reuses its port must set, and returns the
// connection and how long connect() took.
func dialFrom(ns *nettopo.NS, port int, addr string) (net.Conn, time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	c, err := ns.DialFromPort(ctx, port, "tcp4", addr)
	return c, time.Since(start), err
}

// tcpExt reads counter name of ns's TcpExt statistics: PAWSTimewait (SYNs
// into TIME_WAIT refused because their timestamp was older than the last
// one seen), TCPSynRetrans (SYNs sent again for want of an answer).
func tcpExt(t *testing.T, ns *nettopo.NS, name string) uint64 {
	t.Helper()
	vals, err := ns.TCPExt()
	if err != nil {
		t.Fatal(err)
	}
	v, ok := vals[name]
	if !ok {
		t.Fatalf("no TcpExt %s in %s's netstat", name, ns.Name)
	}
	return v
}

// The benchmark's finding, on real packets. Services share a backend, and
// the client reuses one source port across their VIPs (SO_REUSEADDR and an
// explicit bind, as busy clients end up doing with the ephemeral range).
// The backend closes first, so it holds client:port in TIME_WAIT after each
// connection, stamped with the client's TCP timestamps towards the VIP it
// used; those are offset per four-tuple, so a SYN for the same tuple that
// went to another VIP looks old half the time, and the backend would drop
// it (PAWS) until the client retransmits. Each new connection must instead
// take the closed flow's tuple over with the client's own port, its
// timestamps shifted where they would look old (ct.h), and establish at
// once: no SYN retransmission in the client's namespace, no PAWS refusal at
// the backend. With 12 services, a datapath that only forwarded the SYN
// would pass by luck once in 2^11 runs (each pair of VIPs' offsets is in
// the harmless order with odds 1/2).
func TestClientPortReusedAcrossServicesSharingABackend(t *testing.T) {
	const services = 12
	l := newLab(t, "be1")
	startPeer(t, l, "be1")
	l.writeServices(l.sharedServices(services, "be1"))
	l.startAgent()
	backend := fmt.Sprintf("%s:%d", l.backendAddr("be1"), peerPort)
	for i := range services {
		l.waitBackends(clashVIP(i)+":81/TCP", backend)
	}

	client := l.star.Host("client").Addr.String()
	own := fmt.Sprintf("%s:%d", client, clientPort)
	retrans := tcpExt(t, l.client(), "TCPSynRetrans")
	paws := tcpExt(t, l.star.Host("be1").NS, "PAWSTimewait")
	for i := range services {
		c, took, err := dialFrom(l.client(), clientPort, clashVIP(i)+":81")
		if err != nil {
			t.Fatalf("connection %d to %s:81 from port %d: %v", i, clashVIP(i), clientPort, err)
		}
		_ = c.SetDeadline(time.Now().Add(timeout))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err == nil {
			// The backend closes first: wait for its FIN before closing.
			_, err = io.Copy(io.Discard, c)
		}
		c.Close()
		if err != nil {
			t.Fatalf("connection %d to %s:81: %v", i, clashVIP(i), err)
		}
		src := strings.TrimSpace(line)
		t.Logf("connection %d to %s:81: connect took %v, the backend saw %s", i, clashVIP(i), took, src)
		if src != own {
			t.Errorf("connection %d reached the backend from %s, want the client's own %s (the closed flow's tuple taken over)", i, src, own)
		}
	}
	if got := tcpExt(t, l.client(), "TCPSynRetrans") - retrans; got != 0 {
		t.Errorf("the client retransmitted %d SYNs, want 0", got)
	}
	if got := tcpExt(t, l.star.Host("be1").NS, "PAWSTimewait") - paws; got != 0 {
		t.Errorf("the backend refused %d SYNs as old in TIME_WAIT (PAWS), want 0", got)
	}

	// fastpathctl shows no flow with a port of its own: each took the
	// tuple over.
	var rows []ctl.CTRow
	l.ctl(&rows, "ct", "list")
	for _, r := range rows {
		if r.Direction == "forward" && r.SNAT != "" {
			t.Errorf("ct list shows a flow with a port of its own, want none: %+v", r)
		}
	}
}

// The benchmark author's reproduction of stale reply entries: after
// client:port -> VIP -> backend closed, a direct connection from the same
// port to that backend hung, as the closed flow's reply entry turned the
// backend's SYN-ACK into one from the VIP. The client closes first here,
// so the backend holds no TIME_WAIT that could delay the SYN itself.
func TestDirectConnectionAfterAServiceConnectionFromTheSamePort(t *testing.T) {
	l := startWeb(t)
	c, _, err := dialFrom(l.client(), clientPort, vip+":80")
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(timeout))
	name, err := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	name = strings.TrimSpace(name)
	addr := l.backendAddr(name) + ":8080"

	c, took, err := dialFrom(l.client(), clientPort, addr)
	if err != nil {
		t.Fatalf("direct connection from port %d to %s (%s) after one through the VIP: %v", clientPort, name, addr, err)
	}
	defer c.Close()
	if c.RemoteAddr().String() != addr {
		t.Errorf("connected to %s, want %s", c.RemoteAddr(), addr)
	}
	_ = c.SetDeadline(time.Now().Add(timeout))
	r := bufio.NewReader(c)
	first, err := r.ReadString('\n')
	if err == nil {
		_, err = fmt.Fprintf(c, "direct\n")
	}
	echo, err2 := r.ReadString('\n')
	if err != nil || err2 != nil || strings.TrimSpace(first) != name || strings.TrimSpace(echo) != name+" direct" {
		t.Fatalf("direct connection to %s: read %q, %q (%v, %v)", name, first, echo, err, err2)
	}
	t.Logf("direct connection to %s after one through the VIP: connect took %v", name, took)
}

// The socket load balancer gives each connected socket's reverse-translation
// entry back when the socket is released: 100 connects through a VIP from a
// process in the agent's cgroup leave fp_sock_revnat as it was. The client
// is bash (/dev/tcp), started in the node's namespace and the cgroup.
func TestSocketLBReleasesItsReverseNATEntries(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash for the client")
	}
	cg := filepath.Join("/sys/fs/cgroup/unified", fmt.Sprintf("fp-e2e-%d", os.Getpid()))
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Skipf("no cgroup v2 directory for the socket LB: %v", err)
	}
	t.Cleanup(func() {
		var err error
		for range 50 { // a reaped child can keep the cgroup busy a moment
			if err = os.Remove(cg); err == nil || !errors.Is(err, unix.EBUSY) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			t.Errorf("remove cgroup %s: %v", cg, err)
		}
	})
	l := startWeb(t, "--cgroup", cg)
	var st ctl.Status
	l.ctl(&st, "status")
	if !hasLink(st.Links, "fp_sock_release") {
		t.Fatalf("pinned links %v: no fp_sock_release", st.Links)
	}
	before, connects := mapStatus(st, "fp_sock_revnat").Entries, st.Counters["sock_connect"]

	const n = 100
	script := fmt.Sprintf(`for i in $(seq %d); do
	exec 3<>/dev/tcp/%s/80 || exit 1
	read -r name <&3 || exit 2
	exec 3<&-
done
echo done`, n, vip)
	var out []byte
	err = l.star.Node.Do(func() error {
		dir, err := os.Open(cg)
		if err != nil {
			return err
		}
		defer dir.Close()
		cmd := exec.Command(bash, "-c", script)
		// Forked from this thread, the child is in the node's namespace;
		// CLONE_INTO_CGROUP puts it in the cgroup from its first moment.
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(dir.Fd())}
		cmd.WaitDelay = 5 * time.Second
		out, err = cmd.CombinedOutput()
		return err
	})
	if err != nil || strings.TrimSpace(string(out)) != "done" {
		t.Fatalf("client: %v\n%s", err, out)
	}
	l.ctl(&st, "status")
	if got := st.Counters["sock_connect"] - connects; got != n {
		t.Errorf("sock_connect moved by %d, want %d: the connects were not all balanced by the socket LB", got, n)
	}
	if got := mapStatus(st, "fp_sock_revnat").Entries; got != before {
		t.Errorf("fp_sock_revnat holds %d entries after %d connections closed, want %d", got, n, before)
	}
}

func hasLink(links []string, name string) bool {
	for _, l := range links {
		if l == name {
			return true
		}
	}
	return false
}
