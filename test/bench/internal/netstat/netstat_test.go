package netstat

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fastpath-net/fastpath/internal/nettopo"
	"github.com/fastpath-net/fastpath/internal/testpriv"
)

func TestDiff(t *testing.T) {
	d := Diff(map[string]uint64{"a": 5, "b": 1}, map[string]uint64{"a": 2, "b": 3})
	if d["a"] != 3 || d["b"] != 0 {
		t.Errorf("diff %v", d)
	}
}

// TestTimeWaitRefusal shows which counters move when a backend's TIME_WAIT
// socket refuses a SYN whose timestamp is older than the last one it saw,
// as it does behind a NAT that sends two clients' flows to one backend
// tuple: the server closes first (TIME_WAIT on its side, as in the
// benchmarks), and the client connects again from the same port with
// another timestamp offset (tcp_timestamps 1: a random offset, 2: none).
// On this kernel the random offset is drawn per connection tuple (a keyed
// hash of addresses and ports, fixed for the boot), so a reconnect without
// offset looks old exactly when its port's offset was positive: a coin
// toss per port, the same at every run of one boot. The test therefore
// puts several ports into TIME_WAIT with offsets and reconnects them
// without, until one is refused (all 32 accepted: 1 in 4 billion). It
// asserts the counters the benchmarks report (Reported) and logs every
// TcpExt counter that moved.
func TestTimeWaitRefusal(t *testing.T) {
	testpriv.Require(t)
	star, err := nettopo.NewStar("tw", "client", "server")
	if err != nil {
		t.Fatal(err)
	}
	defer star.Close()
	client, server := star.Host("client"), star.Host("server")
	addr := net.JoinHostPort(server.Addr.String(), "80")
	ln, err := server.NS.Listen("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("hi"))
			c.Close() // the server closes first: TIME_WAIT is the server's
		}
	}()
	connect := func(port int, timestamps string) {
		t.Helper()
		if err := client.NS.Sysctl("net/ipv4/tcp_timestamps", timestamps); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := client.NS.DialFromPort(ctx, port, "tcp4", addr)
		if err != nil {
			t.Fatalf("port %d, tcp_timestamps %s: %v", port, timestamps, err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(c); err != nil {
			t.Fatal(err)
		}
	}
	nss := []*nettopo.NS{client.NS, server.NS}
	before := map[string]map[string]uint64{}
	for _, ns := range nss {
		if before[ns.Name], err = ns.TCPExt(); err != nil {
			t.Fatal(err)
		}
	}
	const firstPort, ports = 41001, 32
	for p := firstPort; p < firstPort+ports; p++ {
		connect(p, "1")
	}
	time.Sleep(100 * time.Millisecond) // the client's last ACKs reach the server
	for p := firstPort; p < firstPort+ports; p++ {
		connect(p, "2")
		now, err := server.NS.TCPExt()
		if err != nil {
			t.Fatal(err)
		}
		if Diff(now, before[server.NS.Name])[PAWSTimewait] > 0 {
			t.Logf("port %d: the reconnect without offset was refused (%d ports tried)", p, p-firstPort+1)
			break
		}
	}

	moved := map[string]map[string]uint64{}
	for _, ns := range nss {
		after, err := ns.TCPExt()
		if err != nil {
			t.Fatal(err)
		}
		d := Diff(after, before[ns.Name])
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(d)) {
			if d[k] != 0 {
				parts = append(parts, fmt.Sprintf("%s %d", k, d[k]))
			}
		}
		t.Logf("%s: %s", ns.Name, strings.Join(parts, ", "))
		moved[ns.Name] = d
	}
	if got := moved[server.NS.Name][PAWSTimewait]; got < 1 {
		t.Errorf("server: %s %d, want at least 1", PAWSTimewait, got)
	}
	if got := moved[client.NS.Name][SynRetrans]; got < 1 {
		t.Errorf("client: %s %d, want at least 1", SynRetrans, got)
	}
	if _, err := Sum(nss, Reported); err != nil {
		t.Error(err)
	}
}
