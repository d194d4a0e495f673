package ctmap

import (
	"net/netip"
	"testing"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfmap"
	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
)

// goneUDP is the pair of flow()'s frontend and backend, in UDP.
func goneUDP() []Pair {
	return []Pair{{
		Frontend: netip.MustParseAddrPort("10.96.0.10:80"),
		Backend:  netip.MustParseAddrPort("10.0.1.2:8080"),
		Proto:    lbmap.ProtoUDP,
	}}
}

// FlushPairs deletes both entries of flows from the frontend to a gone
// backend, masqueraded ones too, and nothing else: not the same backend
// behind another frontend, not another backend of the frontend, not the
// same pair in another protocol.
func TestFlushPairsDeletesBothDirectionsOfGoneFlows(t *testing.T) {
	m := bpfmap.NewFake[Key, Entry]("fp_ct", 64)
	put := func(keys []Key, vals []Entry) {
		t.Helper()
		if err := m.Update(keys, vals); err != nil {
			t.Fatal(err)
		}
	}
	gone, goneV := flow(1, 100, 100)
	put(gone, goneV)
	// The same flow masqueraded: REPLY key towards the masquerade address.
	masq := lbmap.AddrFrom(netip.MustParseAddr("192.168.0.1"))
	mf := Key{SAddr: client, DAddr: vip, SPort: 2, DPort: 80, Proto: lbmap.ProtoUDP, Dir: Forward}
	mr := Key{SAddr: backend, DAddr: masq, SPort: 8080, DPort: 61001, Proto: lbmap.ProtoUDP, Dir: Reply}
	put([]Key{mf, mr}, []Entry{
		{NatAddr: backend, NatPort: 8080, Flags: SNAT, SnatAddr: masq, SnatPort: 61001},
		{NatAddr: vip, NatPort: 80, Flags: SNAT, SnatAddr: client, SnatPort: 2},
	})
	// Kept: another backend, another frontend, TCP.
	other := lbmap.AddrFrom(netip.MustParseAddr("10.0.1.3"))
	kept, keptV := flow(3, 100, 100)
	kept[1].SAddr, keptV[0].NatAddr = other, other
	put(kept, keptV)
	vip2 := lbmap.AddrFrom(netip.MustParseAddr("10.96.0.11"))
	viaVIP2, viaVIP2V := flow(4, 100, 100)
	viaVIP2[0].DAddr, viaVIP2V[1].NatAddr = vip2, vip2
	put(viaVIP2, viaVIP2V)
	tcpFlow, tcpV := flow(5, 100, 100)
	tcpFlow[0].Proto, tcpFlow[1].Proto = lbmap.ProtoTCP, lbmap.ProtoTCP
	put(tcpFlow, tcpV)

	n, err := FlushPairs(m, goneUDP())
	if err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Errorf("deleted %d entries, want 4", n)
	}
	all, _ := m.All()
	for _, k := range append(gone, mf, mr) {
		if _, ok := all[k]; ok {
			t.Errorf("%v still there", k)
		}
	}
	for _, k := range append(append(kept, viaVIP2...), tcpFlow...) {
		if _, ok := all[k]; !ok {
			t.Errorf("%v deleted", k)
		}
	}
}

// A flow to a gone backend whose tuple is balanced again, to a backend
// still there, while FlushPairs walks the map is the new flow's: kept.
func TestFlushPairsKeepsAFlowBalancedAgainDuringTheWalk(t *testing.T) {
	m := bpfmap.NewFake[Key, Entry]("fp_ct", 16)
	gone, goneV := flow(1, 100, 100)
	if err := m.Update(gone, goneV); err != nil {
		t.Fatal(err)
	}
	newV := goneV[0]
	newV.NatAddr = lbmap.AddrFrom(netip.MustParseAddr("10.0.1.3"))
	r := &rewriting{Map: m, t: t, renew: map[Key]Entry{gone[0]: newV}}
	n, err := FlushPairs(r, goneUDP())
	if err != nil {
		t.Fatal(err)
	}
	all, _ := m.All()
	if got, ok := all[gone[0]]; !ok || got != newV {
		t.Errorf("the new flow's FORWARD entry: %+v (present %v), want %+v", got, ok, newV)
	}
	if _, ok := all[gone[1]]; ok || n != 1 {
		t.Errorf("deleted %d entries (gone flow's REPLY entry left: %v), want 1: the gone flow's REPLY entry", n, ok)
	}
}
