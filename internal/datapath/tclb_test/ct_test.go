package tclb_test

import (
	"testing"

	"github.com/cilium/ebpf"

	"github.com/fastpath-net/fastpath/internal/datapath/ctmap"
	"github.com/fastpath-net/fastpath/internal/datapath/pkttest"
)

// Lifetimes in seconds, as in bpf/include/fastpath.h.
const (
	lifeTCP         = 21600
	lifeTCPSyn      = 60
	lifeTCPClose    = 10
	lifeTCPTimeWait = 60
	lifeNonTCP      = 60
)

// step runs one packet and checks the expiry and counters of the ct entry it
// should have touched.
type step struct {
	name    string
	frame   []byte
	entry   ctmap.Key
	life    uint64 // seconds
	flags   uint16
	packets uint64
}

func runSteps(t *testing.T, e *env, steps []step) {
	t.Helper()
	bytes := map[ctmap.Key]uint64{}
	for _, s := range steps {
		before := bootNow(t)
		e.mustRun(s.frame, actOK)
		after := bootNow(t)
		bytes[s.entry] += uint64(len(s.frame))

		got := e.ctEntry(s.entry)
		lo, hi := before+s.life*second, after+s.life*second
		if got.Expires < lo || got.Expires > hi {
			t.Errorf("%s: %v expires in %.1fs, want %ds", s.name, s.entry, float64(int64(got.Expires-before))/1e9, s.life)
		}
		if got.Flags != s.flags || got.Packets != s.packets || got.Bytes != bytes[s.entry] {
			t.Errorf("%s: %v flags %#x packets %d bytes %d, want %#x %d %d", s.name, s.entry,
				got.Flags, got.Packets, got.Bytes, s.flags, s.packets, bytes[s.entry])
		}
	}
}

func TestCTLifetimesFollowTheTCPHandshakeAndClose(t *testing.T) {
	e := newEnv(t)
	e.setService(vip, tcp, revNatID, be1)
	fwd, rep := ctKey(toVIP, tcp, ctmap.Forward), ctKey(from(be1.addr), tcp, ctmap.Reply)
	c, b := toVIP, from(be1.addr)
	runSteps(t, e, []step{
		{"syn", pkttest.TCPFrame(c, syn, nil), fwd, lifeTCPSyn, 0, 1},
		{"syn-ack", pkttest.TCPFrame(b, syn|ack, nil), rep, lifeTCPSyn, ctmap.SeenReply, 1},
		{"ack", pkttest.TCPFrame(c, ack, nil), fwd, lifeTCP, 0, 2},
		{"data", pkttest.TCPFrame(b, ack, []byte("hello")), rep, lifeTCP, ctmap.SeenReply, 2},
		{"fin", pkttest.TCPFrame(c, fin|ack, nil), fwd, lifeTCPClose, ctmap.Closing, 3},
		// Closing sticks: later packets do not bring the long lifetime back.
		{"ack after fin", pkttest.TCPFrame(c, ack, nil), fwd, lifeTCPClose, ctmap.Closing, 4},
		// The REPLY entry of a closed flow is the backend's tuple: it stays
		// through the backend's TIME_WAIT (a tombstone for clashes).
		{"reply fin", pkttest.TCPFrame(b, fin|ack, nil), rep, lifeTCPTimeWait, ctmap.SeenReply | ctmap.Closing, 3},
		{"reply ack after fin", pkttest.TCPFrame(b, ack, nil), rep, lifeTCPTimeWait, ctmap.SeenReply | ctmap.Closing, 4},
		{"reply rst", pkttest.TCPFrame(b, rst|ack, nil), rep, lifeTCPTimeWait, ctmap.SeenReply | ctmap.Closing, 5},
	})
	// The REPLY entry is created with the FORWARD one, on the first packet.
	e.ctEntry(rep)
}

func TestCTLifetimesOfUDPAndSCTP(t *testing.T) {
	e := newEnv(t)
	e.setService(vip, udp, revNatID, be1)
	e.setService(vip, sctp, revNatID, be1)
	runSteps(t, e, []step{
		{"udp", pkttest.UDPFrame(toVIP, []byte("q")), ctKey(toVIP, udp, ctmap.Forward), lifeNonTCP, 0, 1},
		{"udp reply", pkttest.UDPFrame(from(be1.addr), []byte("a")), ctKey(from(be1.addr), udp, ctmap.Reply), lifeNonTCP, ctmap.SeenReply, 1},
		{"sctp", pkttest.SCTPFrame(toVIP, make([]byte, 16), false), ctKey(toVIP, sctp, ctmap.Forward), lifeNonTCP, 0, 1},
	})
}

// When the REPLY entry cannot be written the flow is not half-tracked: the
// FORWARD entry is removed again and the packet dropped as DROP_CT_FULL.
// fp_ct is made a one-entry non-LRU hash so that the second insert fails.
func TestCTInsertFailureDrops(t *testing.T) {
	e := newEnvWith(t, func(spec *ebpf.CollectionSpec) {
		spec.Maps["fp_ct"].Type = ebpf.Hash
		spec.Maps["fp_ct"].MaxEntries = 1
	})
	e.setService(vip, tcp, revNatID, be1)
	e.mustRun(pkttest.TCPFrame(toVIP, syn, nil), actShot)
	if n := e.ctLen(); n != 0 {
		t.Errorf("%d ct entries after a failed insert, want 0", n)
	}
	e.wantMetrics(map[int]uint64{metricDropCTFull: 1})
}
