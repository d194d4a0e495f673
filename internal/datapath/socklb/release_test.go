package socklb

import (
	"fmt"
	"testing"

	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
)

// revNatLen counts the entries of fp_sock_revnat.
func (e *env) revNatLen() int {
	e.t.Helper()
	var k RevNatKey
	var v RevNatValue
	n := 0
	it := e.objs.FpSockRevnat.Iterate()
	for it.Next(&k, &v) {
		n++
	}
	if err := it.Err(); err != nil {
		e.t.Fatalf("iterate fp_sock_revnat: %v", err)
	}
	return n
}

// Each connect() to a VIP writes a reverse-translation entry; releasing the
// socket deletes it. A connection held open keeps its entry (getpeername
// shows the VIP), and 100 connections closed leave the map as it was, TCP
// and connected UDP alike.
func TestReleaseDeletesTheSocketsRevNatEntry(t *testing.T) {
	e := newEnv(t)
	e.setService(vipTCP, lbmap.ProtoTCP, 1, "b1-tcp", "b2-tcp")
	e.setService(vipUDP, lbmap.ProtoUDP, 2, "b1-udp", "b2-udp")
	c := e.startClient(e.cgroup)
	before := e.revNatLen()

	if r := c.do("tcp", vipTCP.String()); r.Errno != "" || r.Peer != vipTCP.String() {
		t.Fatalf("connect: %+v, want success with peer %s", r, vipTCP)
	}
	if n := e.revNatLen(); n != before+1 {
		t.Fatalf("fp_sock_revnat holds %d entries with one connection open, want %d", n, before+1)
	}
	if r := c.do("close", ""); r.Err != "" {
		t.Fatal(r.Err)
	}
	if n := e.revNatLen(); n != before {
		t.Errorf("fp_sock_revnat holds %d entries after the connection closed, want %d", n, before)
	}

	const conns = 100
	if r := c.doReq(request{Op: "tcpmany", Addr: vipTCP.String(), N: conns}); r.Errno != "" || r.Body != fmt.Sprint(conns) {
		t.Fatalf("%d connections: %+v", conns, r)
	}
	if n := e.revNatLen(); n != before {
		t.Errorf("fp_sock_revnat holds %d entries after %d connections closed, want %d", n, conns, before)
	}
	for range 10 {
		if r := c.do("udpconn", vipUDP.String()); r.Errno != "" || r.From != vipUDP.String() {
			t.Fatalf("connected UDP: %+v, want an answer from %s", r, vipUDP)
		}
	}
	if n := e.revNatLen(); n != before {
		t.Errorf("fp_sock_revnat holds %d entries after 10 connected UDP sockets closed, want %d", n, before)
	}
}

// The failure the benchmark found: TCP connects that never gave their
// entries back filled the LRU map and evicted the entry of a long-lived
// connected UDP socket (a resolver's), whose answers then came from the
// backend's address. With 3 times the map's size of connects, the UDP
// socket's answers still come from the VIP.
func TestLongLivedUDPEntrySurvivesAFloodOfTCPConnects(t *testing.T) {
	e := newEnv(t)
	e.setService(vipTCP, lbmap.ProtoTCP, 1, "b1-tcp", "b2-tcp")
	e.setService(vipUDP, lbmap.ProtoUDP, 2, "b1-udp", "b2-udp")
	c := e.startClient(e.cgroup)

	if r := c.do("udphold", vipUDP.String()); r.Errno != "" || r.From != vipUDP.String() || r.Peer != vipUDP.String() {
		t.Fatalf("connected UDP: %+v, want answers from and peer %s", r, vipUDP)
	}
	flood := 3 * int(e.objs.FpSockRevnat.MaxEntries())
	if r := c.doReq(request{Op: "tcpmany", Addr: vipTCP.String(), N: flood}); r.Errno != "" {
		t.Fatalf("%d connections: %+v", flood, r)
	}
	if n := e.revNatLen(); n != 1 {
		t.Errorf("fp_sock_revnat holds %d entries after the flood, want 1 (the UDP socket's)", n)
	}
	if r := c.do("udpask", ""); r.Errno != "" || r.From != vipUDP.String() {
		t.Errorf("connected UDP after %d TCP connects: %+v, want an answer from %s", flood, r, vipUDP)
	}
}
