package e2e

import (
	"net"
	"strings"
	"testing"
	"time"
)

// udpAsker is a UDP socket in the client namespace bound to one port, so
// every datagram it sends belongs to one flow, as a DNS client or a
// streaming sender that keeps its port.
type udpAsker struct {
	t   *testing.T
	c   net.PacketConn
	dst *net.UDPAddr
}

func newUDPAsker(t *testing.T, l *lab, port string, dst string) *udpAsker {
	t.Helper()
	var c net.PacketConn
	err := l.client().Do(func() (err error) {
		c, err = net.ListenPacket("udp", ":"+port)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	d, err := net.ResolveUDPAddr("udp", dst)
	if err != nil {
		t.Fatal(err)
	}
	return &udpAsker{t: t, c: c, dst: d}
}

// ask sends one datagram and returns who answered and from where; "" when
// no answer came within wait.
func (u *udpAsker) ask(wait time.Duration) (name, from string) {
	u.t.Helper()
	if _, err := u.c.WriteTo([]byte("ping"), u.dst); err != nil {
		u.t.Fatal(err)
	}
	_ = u.c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 512)
	n, src, err := u.c.ReadFrom(buf)
	if err != nil {
		return "", ""
	}
	name, _, _ = strings.Cut(string(buf[:n]), " ")
	return name, src.String()
}

// kube-proxy deletes the conntrack entries of UDP flows to an endpoint that
// leaves a Service. A client that keeps sending from one port never ends
// its flow, so without that it would follow the flow's ct entry to the
// removed backend for as long as it sends. Here its datagrams must reach
// the remaining backend once the agent has synced the removal, and stay
// there.
func TestUDPFlowMovesOffRemovedBackend(t *testing.T) {
	l := startWeb(t)
	l.waitBackends(dnsFrontend, l.backendAddr("be1")+":8080", l.backendAddr("be2")+":8080")
	u := newUDPAsker(t, l, "40053", vip+":53")

	first, from := u.ask(timeout)
	if first != "be1" && first != "be2" {
		t.Fatalf("first answer from %q (%s), want be1 or be2", first, from)
	}
	for i := 0; i < 5; i++ {
		if name, _ := u.ask(timeout); name != first {
			t.Fatalf("datagram %d of one flow answered by %q, want %q (the flow's backend)", i, name, first)
		}
	}
	rest := map[string]string{"be1": "be2", "be2": "be1"}[first]
	l.writeServices(l.webService(rest))
	l.waitBackends(dnsFrontend, l.backendAddr(rest)+":8080")

	// The flush follows the map write in the same sync: allow the agent
	// a few seconds, bounded, to get there. A datagram to the removed
	// backend is still answered by it (it runs), so only the answerer
	// tells.
	deadline := time.Now().Add(10 * time.Second)
	for {
		name, from := u.ask(time.Second)
		if name == rest {
			if from != vip+":53" {
				t.Fatalf("answer from %s, want the VIP %s:53", from, vip)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("10 s after %s left the service, the flow still reaches %q; want %s\nagent log:\n%s",
				first, name, rest, l.agentLog.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i := 0; i < 5; i++ {
		if name, _ := u.ask(timeout); name != rest {
			t.Fatalf("datagram %d after the move answered by %q, want %s", i, name, rest)
		}
	}
}
