package tclb_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
	"github.com/fastpath-net/fastpath/internal/datapath/pkttest"
)

// Session affinity (sessionAffinity: ClientIP) at TC: a client is its
// source address. Random outcomes are asserted with bounds whose chance of
// a false result is at most 2^-32 or about 1e-9, as in lb_test.go.

const affinityTimeout = 60 // seconds

var (
	be3  = backend{id: 3, addr: addrPort("10.0.3.7:8080")}
	be4  = backend{id: 4, addr: addrPort("10.0.4.8:8080")}
	vip2 = addrPort("10.96.0.11:80")
)

func affinitySvc(revNat uint32) lbmap.ServiceValue {
	return lbmap.ServiceValue{Flags: lbmap.ServiceAffinity, RevNatID: revNat, AffinityTimeout: affinityTimeout}
}

func affKey(client netip.Addr, revNat uint32) lbmap.AffinityKey {
	return lbmap.AffinityKey{Client: lbmap.AddrFrom(client), RevNatID: revNat}
}

// newFlow runs the first packet of flow f and returns the backend of bes
// it was sent to.
func (e *env) newFlow(f pkttest.Flow, proto uint8, bes ...backend) backend {
	e.t.Helper()
	frame := pkttest.TCPFrame(f, syn, nil)
	if proto == udp {
		frame = pkttest.UDPFrame(f, []byte("q"))
	}
	p, err := pkttest.Parse(e.mustRun(frame, actOK))
	if err != nil {
		e.t.Fatal(err)
	}
	for _, b := range bes {
		if p.Dst() == b.addr {
			return b
		}
	}
	e.t.Fatalf("flow %v sent to %v, not one of %v", f, p.Dst(), bes)
	return backend{}
}

func (e *env) affinityEntry(k lbmap.AffinityKey) lbmap.AffinityValue {
	e.t.Helper()
	v, ok, err := e.affinity.Lookup(k)
	if err != nil {
		e.t.Fatal(err)
	}
	if !ok {
		e.t.Fatalf("no affinity entry for %v", k)
	}
	return v
}

// remember writes an affinity entry as an earlier connection would have.
func (e *env) remember(k lbmap.AffinityKey, b backend, slot uint16, lastUsed uint64) {
	e.t.Helper()
	v := lbmap.AffinityValue{BackendID: b.id, Slot: slot, LastUsed: lastUsed}
	if err := e.affinity.Update([]lbmap.AffinityKey{k}, []lbmap.AffinityValue{v}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) affinityLen() int {
	e.t.Helper()
	all, err := e.affinity.All()
	if err != nil {
		e.t.Fatal(err)
	}
	return len(all)
}

// slotOf returns b's slot in a service whose backends are bes, in order.
func slotOf(b backend, bes ...backend) uint16 {
	for i, x := range bes {
		if x == b {
			return uint16(i + 1)
		}
	}
	return 0
}

func TestAffinityKeepsAClientOnOneBackend(t *testing.T) {
	for name, proto := range map[string]uint8{"tcp": tcp, "udp": udp} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			bes := []backend{be1, be2}
			e.setServiceValue(vip, proto, affinitySvc(revNatID), bes...)
			k := affKey(client.Addr(), revNatID)
			var first backend
			for i := range uint16(50) {
				before := bootNow(t)
				b := e.newFlow(withSport(toVIP, 30000+i), proto, bes...)
				after := bootNow(t)
				if i == 0 {
					first = b
				} else if b != first {
					t.Fatalf("new flow %d went to backend %d, the first to %d", i, b.id, first.id)
				}
				// Every new connection refreshes the memory (iptables `recent --set`).
				a := e.affinityEntry(k)
				if a.BackendID != b.id || a.Slot != slotOf(b, bes...) || a.LastUsed < before || a.LastUsed > after {
					t.Fatalf("after new flow %d: entry %+v, want backend %d slot %d used in [%d, %d]",
						i, a, b.id, slotOf(b, bes...), before, after)
				}
			}

			// Packets of established flows do not refresh it.
			last := e.affinityEntry(k).LastUsed
			established := pkttest.TCPFrame(withSport(toVIP, 30000), ack, []byte("data"))
			if proto == udp {
				established = pkttest.UDPFrame(withSport(toVIP, 30000), []byte("more"))
			}
			e.mustRun(established, actOK)
			if got := e.affinityEntry(k).LastUsed; got != last {
				t.Errorf("a packet of an established flow moved last_used from %d to %d", last, got)
			}
			if n := e.affinityLen(); n != 1 {
				t.Errorf("%d affinity entries, want 1", n)
			}
			e.wantMetrics(map[int]uint64{metricForwardNew: 50, metricForwardCT: 1})
		})
	}
}

// Clients are told apart by address, and one client's memories of two
// frontends are separate: interleaved, neither overwrites the other.
func TestAffinityIsPerClientAndFrontend(t *testing.T) {
	e := newEnv(t)
	e.setServiceValue(vip, tcp, affinitySvc(revNatID), be1, be2)
	e.setServiceValue(vip2, tcp, affinitySvc(revNatID+1), be3, be4)

	const clients = 64
	got := map[uint32]int{}
	for i := range clients {
		src := netip.AddrFrom4([4]byte{10, 0, 100, byte(i)})
		var first [2]backend
		for n := range uint16(10) {
			b1 := e.newFlow(pkttest.Flow{Src: netip.AddrPortFrom(src, 40000+2*n), Dst: vip}, tcp, be1, be2)
			b2 := e.newFlow(pkttest.Flow{Src: netip.AddrPortFrom(src, 40001+2*n), Dst: vip2}, tcp, be3, be4)
			if n == 0 {
				first = [2]backend{b1, b2}
				got[b1.id]++
			} else if b1 != first[0] || b2 != first[1] {
				t.Fatalf("client %v flow %d went to backends %d and %d, its first to %d and %d",
					src, n, b1.id, b2.id, first[0].id, first[1].id)
			}
		}
	}
	// Binomial(64, 1/2): fewer than 10 on one side has probability < 1e-9.
	if got[be1.id] < 10 || got[be2.id] < 10 {
		t.Errorf("of %d clients, %d stuck to backend 1 and %d to backend 2: affinity does not spread clients", clients, got[be1.id], got[be2.id])
	}
	if n := e.affinityLen(); n != 2*clients {
		t.Errorf("%d affinity entries, want %d (one per client and frontend)", n, 2*clients)
	}
}

// A memory older than the timeout is not followed: the pick is random again
// and is remembered afresh. Entries are written with a chosen age rather
// than waited for.
func TestAffinityExpiresAfterTheTimeout(t *testing.T) {
	e := newEnv(t)
	bes := []backend{be1, be2}
	e.setServiceValue(vip, tcp, affinitySvc(revNatID), bes...)
	k := affKey(client.Addr(), revNatID)
	sport := uint16(30000)
	picks := func(age time.Duration) map[uint32]int {
		got := map[uint32]int{}
		for range 32 {
			e.remember(k, be2, 2, bootNow(t)-uint64(age))
			before := bootNow(t)
			b := e.newFlow(withSport(toVIP, sport), tcp, bes...)
			sport++
			if a := e.affinityEntry(k); a.BackendID != b.id || a.Slot != slotOf(b, bes...) || a.LastUsed < before {
				t.Fatalf("age %s: after a flow to backend %d the entry is %+v", age, b.id, a)
			}
			got[b.id]++
		}
		return got
	}
	if got := picks((affinityTimeout - 1) * time.Second); got[be2.id] != 32 {
		t.Errorf("memory %ds old (timeout %ds): picks %v, want all 32 on backend 2", affinityTimeout-1, affinityTimeout, got)
	}
	// Followed, the memory would send all 32 to backend 2; random, that has probability 2^-32.
	if got := picks((affinityTimeout + 1) * time.Second); got[be1.id] == 0 {
		t.Errorf("memory %ds old (timeout %ds): picks %v, want a fresh random pick", affinityTimeout+1, affinityTimeout, got)
	}
	// A last use in the future (the map written by hand) is not trusted either.
	if got := picks(-time.Hour); got[be1.id] == 0 {
		t.Errorf("memory used in the future: picks %v, want a fresh random pick", got)
	}
}

// A memory is followed only while its slot still holds its backend.
func TestAffinityNeverReusesARemovedBackend(t *testing.T) {
	e := newEnv(t)
	e.setServiceValue(vip, tcp, affinitySvc(revNatID), be1, be2)
	k := affKey(client.Addr(), revNatID)
	sport := uint16(30000)
	next := func() backend {
		sport++
		return e.newFlow(withSport(toVIP, sport), tcp, be1, be2, be3)
	}

	// be2 leaves: the count drops to 1, and slot 2 still names be2 until the
	// reconciler deletes it.
	e.setServiceValue(vip, tcp, affinitySvc(revNatID), be1)
	for range 8 {
		e.remember(k, be2, 2, bootNow(t))
		if b := next(); b != be1 {
			t.Fatalf("a flow went to backend %d through a memory of the removed slot 2", b.id)
		}
	}

	// be1 leaves too but stays in fp_backends (another service uses it), and
	// the slots are rewritten: [be2, be3].
	bes := []backend{be2, be3}
	e.setServiceValue(vip, tcp, affinitySvc(revNatID), bes...)
	got := map[uint32]int{}
	for range 32 {
		e.remember(k, be1, 1, bootNow(t))
		b := next()
		if b == be1 {
			t.Fatal("a flow went to removed backend 1 through affinity")
		}
		if a := e.affinityEntry(k); a.BackendID != b.id || a.Slot != slotOf(b, bes...) {
			t.Fatalf("after a flow to backend %d the entry is %+v, want slot %d", b.id, a, slotOf(b, bes...))
		}
		got[b.id]++
	}
	// Not "whatever slot 1 holds now": a fresh random pick, which puts all
	// 32 on one backend with probability 2^-31.
	if got[be2.id] == 0 || got[be3.id] == 0 {
		t.Errorf("with the remembered backend gone, picks were %v; want both backends 2 and 3", got)
	}
	e.wantMetrics(map[int]uint64{metricForwardNew: 40})
}

// Without the flag, or with a zero timeout, the choice stays random, and a
// memory left in the map is neither followed nor refreshed.
func TestWithoutAffinityTheChoiceStaysRandom(t *testing.T) {
	for name, svc := range map[string]lbmap.ServiceValue{
		"no flag, no timeout": {RevNatID: revNatID},
		"flag, no timeout":    {RevNatID: revNatID, Flags: lbmap.ServiceAffinity},
		"timeout, no flag":    {RevNatID: revNatID, AffinityTimeout: affinityTimeout},
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			e.setServiceValue(vip, tcp, svc, be1, be2)
			k := affKey(client.Addr(), revNatID)
			old := bootNow(t) - 1
			e.remember(k, be2, 2, old)
			const flows = 64
			got := map[uint32]int{}
			for i := range uint16(flows) {
				got[e.newFlow(withSport(toVIP, 30000+i), tcp, be1, be2).id]++
			}
			// Binomial(64, 1/2): fewer than 10 on one side has probability < 1e-9.
			if got[be1.id] < 10 || got[be2.id] < 10 {
				t.Errorf("%d flows from one client: backend 1 got %d, backend 2 got %d; want random spread", flows, got[be1.id], got[be2.id])
			}
			if a := e.affinityEntry(k); a.LastUsed != old || e.affinityLen() != 1 {
				t.Errorf("the affinity map was written: %+v, %d entries", a, e.affinityLen())
			}
		})
	}
}
