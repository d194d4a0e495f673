package ctmap

import (
	"net/netip"
	"testing"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfmap"
	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
)

var (
	client  = lbmap.AddrFrom(netip.MustParseAddr("10.0.0.2"))
	vip     = lbmap.AddrFrom(netip.MustParseAddr("10.96.0.10"))
	backend = lbmap.AddrFrom(netip.MustParseAddr("10.0.1.2"))
)

// flow returns the FORWARD and REPLY entries of one connection with the
// given deadlines.
func flow(sport uint16, fwdExpires, repExpires uint64) ([]Key, []Entry) {
	fwd := Key{SAddr: client, DAddr: vip, SPort: sport, DPort: 80, Proto: lbmap.ProtoUDP, Dir: Forward}
	rep := Key{SAddr: backend, DAddr: client, SPort: 8080, DPort: sport, Proto: lbmap.ProtoUDP, Dir: Reply}
	return []Key{fwd, rep}, []Entry{
		{NatAddr: backend, NatPort: 8080, Expires: fwdExpires},
		{NatAddr: vip, NatPort: 80, Expires: repExpires},
	}
}

func TestTwinFindsTheOtherDirection(t *testing.T) {
	keys, vals := flow(4000, 0, 0)
	if got := Twin(keys[0], vals[0]); got != keys[1] {
		t.Errorf("Twin(forward) = %v, want %v", got, keys[1])
	}
	if got := Twin(keys[1], vals[1]); got != keys[0] {
		t.Errorf("Twin(reply) = %v, want %v", got, keys[0])
	}
}

// A masqueraded flow's REPLY key has the masquerade address and port where
// a plain flow's has the client's.
func TestTwinOfAMasqueradedFlow(t *testing.T) {
	masq := lbmap.AddrFrom(netip.MustParseAddr("192.168.0.1"))
	fwd := Key{SAddr: client, DAddr: vip, SPort: 4000, DPort: 80, Proto: lbmap.ProtoTCP, Dir: Forward}
	rep := Key{SAddr: backend, DAddr: masq, SPort: 8080, DPort: 61001, Proto: lbmap.ProtoTCP, Dir: Reply}
	fwdV := Entry{NatAddr: backend, NatPort: 8080, Flags: SNAT, SnatAddr: masq, SnatPort: 61001}
	repV := Entry{NatAddr: vip, NatPort: 80, Flags: SNAT | SeenReply, SnatAddr: client, SnatPort: 4000}
	if got := Twin(fwd, fwdV); got != rep {
		t.Errorf("Twin(forward) = %v, want %v", got, rep)
	}
	if got := Twin(rep, repV); got != fwd {
		t.Errorf("Twin(reply) = %v, want %v", got, fwd)
	}
}

func TestGCDeletesFlowsOnlyWhenBothDirectionsExpired(t *testing.T) {
	m := bpfmap.NewFake[Key, Entry]("fp_ct", 16)
	live, liveV := flow(1, 200, 200)
	quiet, quietV := flow(2, 200, 50) // replies stopped, requests go on
	dead, deadV := flow(3, 50, 60)
	orphan, orphanV := flow(4, 50, 0)
	for _, f := range []struct {
		k []Key
		v []Entry
	}{{live, liveV}, {quiet, quietV}, {dead, deadV}, {orphan[:1], orphanV[:1]}} {
		if err := m.Update(f.k, f.v); err != nil {
			t.Fatal(err)
		}
	}
	n, err := GC(m, 100)
	if err != nil || n != 3 {
		t.Fatalf("GC = %d, %v; want 3 deleted (both of the dead flow, the orphan)", n, err)
	}
	for _, k := range append(live, quiet...) {
		if _, ok, _ := m.Lookup(k); !ok {
			t.Errorf("%v was deleted while its flow is alive", k)
		}
	}
	for _, k := range append(dead, orphan[0]) {
		if _, ok, _ := m.Lookup(k); ok {
			t.Errorf("%v survived although its flow expired", k)
		}
	}
}

// A flow with a port of its own for a clash has the client's own address
// with that port in its REPLY key, like a masqueraded flow has the
// masquerade address.
func TestTwinOfAFlowWithAPortOfItsOwn(t *testing.T) {
	fwd := Key{SAddr: client, DAddr: vip, SPort: 4000, DPort: 80, Proto: lbmap.ProtoTCP, Dir: Forward}
	rep := Key{SAddr: backend, DAddr: client, SPort: 8080, DPort: 61001, Proto: lbmap.ProtoTCP, Dir: Reply}
	fwdV := Entry{NatAddr: backend, NatPort: 8080, Flags: SNAT | SNATPort, SnatAddr: client, SnatPort: 61001}
	repV := Entry{NatAddr: vip, NatPort: 80, Flags: SNAT | SNATPort, SnatAddr: client, SnatPort: 4000}
	if got := Twin(fwd, fwdV); got != rep {
		t.Errorf("Twin(forward) = %v, want %v", got, rep)
	}
	if got := Twin(rep, repV); got != fwd {
		t.Errorf("Twin(reply) = %v, want %v", got, fwd)
	}
}

// A closed flow (both directions closing) loses its FORWARD entry once that
// expires, while its REPLY entry, alive through the backend's TIME_WAIT,
// stays as the tombstone the datapath looks for; once that expires too it
// goes. A half-closed flow (only the client closed) keeps its expired
// FORWARD entry while the backend still sends.
func TestGCLetsAClosedFlowsForwardEntryGoFirst(t *testing.T) {
	m := bpfmap.NewFake[Key, Entry]("fp_ct", 16)
	closed, closedV := flow(1, 50, 200)
	closedV[0].Flags, closedV[1].Flags = Closing, Closing|SeenReply
	half, halfV := flow(2, 50, 200)
	halfV[0].Flags, halfV[1].Flags = Closing, SeenReply
	gone, goneV := flow(3, 50, 90)
	goneV[0].Flags, goneV[1].Flags = Closing, Closing|SeenReply
	for _, f := range []struct {
		k []Key
		v []Entry
	}{{closed, closedV}, {half, halfV}, {gone, goneV}} {
		if err := m.Update(f.k, f.v); err != nil {
			t.Fatal(err)
		}
	}
	n, err := GC(m, 100)
	if err != nil || n != 3 {
		t.Fatalf("GC = %d, %v; want 3 deleted (the closed flow's forward entry, both of the gone one)", n, err)
	}
	for _, k := range []Key{closed[1], half[0], half[1]} {
		if _, ok, _ := m.Lookup(k); !ok {
			t.Errorf("%v was deleted", k)
		}
	}
	for _, k := range []Key{closed[0], gone[0], gone[1]} {
		if _, ok, _ := m.Lookup(k); ok {
			t.Errorf("%v survived", k)
		}
	}
}

// A tuple balanced again (reopened to another backend) leaves the old REPLY
// entry behind: its twin's twin is the new REPLY entry, not it, so it goes
// once it expires even though the FORWARD entry it names is alive.
func TestGCDeletesALeftOverReplyEntry(t *testing.T) {
	m := bpfmap.NewFake[Key, Entry]("fp_ct", 16)
	keys, vals := flow(1, 200, 200)
	other := lbmap.AddrFrom(netip.MustParseAddr("10.0.1.3"))
	old := Key{SAddr: other, DAddr: client, SPort: 8080, DPort: 1, Proto: lbmap.ProtoUDP, Dir: Reply}
	if err := m.Update(append(keys, old), append(vals, Entry{NatAddr: vip, NatPort: 80, Expires: 50})); err != nil {
		t.Fatal(err)
	}
	if n, err := GC(m, 100); err != nil || n != 1 {
		t.Fatalf("GC = %d, %v; want 1 deleted", n, err)
	}
	if _, ok, _ := m.Lookup(old); ok {
		t.Error("the left-over reply entry survived")
	}
	for _, k := range keys {
		if _, ok, _ := m.Lookup(k); !ok {
			t.Errorf("%v of the live flow was deleted", k)
		}
	}
}
