package tclb_test

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/fastpath-net/fastpath/internal/datapath/ctmap"
	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
	"github.com/fastpath-net/fastpath/internal/datapath/pkttest"
)

// Timestamp translation (bpf/include/ct.h, tuple clashes): a new flow whose
// tuple at the backend is a closed flow's, which the backend holds in
// TIME_WAIT, takes it over with the client's own port; when its SYN's
// TSval is not later than the last one the backend saw, all its TSvals
// are shifted up by a delta, and the backend's TSecr back down.

// The client's timestamps of the first flow: its last, the FIN's, is what
// the backend's TIME_WAIT remembers.
const (
	tsFirst = 50_000
	tsFIN   = 50_010
)

// closeTCPWithTS is closeTCP with timestamps on every segment, the client's
// starting at tsFirst; the backend's FIN comes first, the client's carries
// tsFIN. The tombstone must then hold tsFIN.
func closeTCPWithTS(t *testing.T, e *env, fe, b, c netip.AddrPort) {
	t.Helper()
	in, back := pkttest.Flow{Src: c, Dst: fe}, pkttest.Flow{Src: b, Dst: c}
	want := pkttest.TCPFrameOpts(pkttest.Flow{Src: c, Dst: b}, syn, pkttest.SYNTimestamp(tsFirst, 0), nil)
	wantFrame(t, e.mustRun(pkttest.TCPFrameOpts(in, syn, pkttest.SYNTimestamp(tsFirst, 0), nil), actOK), want)
	for _, s := range []struct {
		f            pkttest.Flow
		flags        uint8
		tsval, tsecr uint32
	}{
		{back, syn | ack, 7, tsFirst}, {in, ack, tsFirst + 1, 7}, {back, fin | ack, 8, tsFirst + 1},
		{in, fin | ack, tsFIN, 8}, {back, ack, 9, tsFIN},
	} {
		e.mustRun(pkttest.TCPFrameOpts(s.f, s.flags, pkttest.Timestamp(s.tsval, s.tsecr), nil), actOK)
	}
	rep := e.ctEntry(ctKey(back, tcp, ctmap.Reply))
	if rep.Flags != ctmap.SeenReply|ctmap.Closing|ctmap.TS || rep.TsLast != tsFIN {
		t.Fatalf("REPLY entry after the close: %+v, want flags TS and TsLast %d", rep, tsFIN)
	}
}

// A SYN whose TSval is older than the TIME_WAIT's: forwarded from the
// client's own port with TSval shifted past the old flow's last, and the
// flow's later packets both ways translated, with valid checksums
// (wantFrame verifies them from scratch).
func TestClashTakesOverATimeWaitTupleWithTimestampDelta(t *testing.T) {
	const min, max = 61000, 61003
	e := clashEnv(t, min, max)
	closeTCPWithTS(t, e, vip, be1.addr, client)

	const tsNew = 300 // the client's clock for client:40000 -> vipB
	const delta = tsFIN + 1 - tsNew
	toBackend := pkttest.Flow{Src: client, Dst: be1.addr}
	in := pkttest.TCPFrameOpts(toVIPB, syn, pkttest.SYNTimestamp(tsNew, 0), nil)
	wantFrame(t, e.mustRun(in, actOK), pkttest.TCPFrameOpts(toBackend, syn, pkttest.SYNTimestamp(tsFIN+1, 0), nil))

	fwd := e.ctEntry(ctKey(toVIPB, tcp, ctmap.Forward))
	if fwd.Flags != 0 || fwd.TsDelta != delta || fwd.NatAddr != lbmap.AddrFrom(be1.addr.Addr()) ||
		fwd.NatPort != be1.addr.Port() || fwd.RevNatID != revNatIDB || fwd.Packets != 1 || fwd.Bytes != uint64(len(in)) {
		t.Errorf("FORWARD entry %+v, want TsDelta %d", fwd, delta)
	}
	rep := e.ctEntry(ctKey(toBackend.Reverse(), tcp, ctmap.Reply))
	if rep.Flags != 0 || rep.TsDelta != delta || rep.NatAddr != lbmap.AddrFrom(vipB.Addr()) ||
		rep.NatPort != vipB.Port() || rep.RevNatID != revNatIDB {
		t.Errorf("REPLY entry %+v, want the new flow's with TsDelta %d", rep, delta)
	}
	// The old flow's FORWARD entry went with its tombstone.
	if _, ok, err := e.ct.Lookup(ctKey(toVIP, tcp, ctmap.Forward)); err != nil || ok {
		t.Errorf("old FORWARD entry still there (%v)", err)
	}

	steps := []struct {
		in, want []byte
	}{
		// SYN-ACK: the backend echoes the shifted TSval; the client gets its own.
		{pkttest.TCPFrameOpts(toBackend.Reverse(), syn|ack, pkttest.SYNTimestamp(900, tsFIN+1), nil),
			pkttest.TCPFrameOpts(toVIPB.Reverse(), syn|ack, pkttest.SYNTimestamp(900, tsNew), nil)},
		{pkttest.TCPFrameOpts(toVIPB, ack, pkttest.Timestamp(tsNew+1, 900), []byte("GET /")),
			pkttest.TCPFrameOpts(toBackend, ack, pkttest.Timestamp(tsNew+1+delta, 900), []byte("GET /"))},
		{pkttest.TCPFrameOpts(toBackend.Reverse(), ack, pkttest.Timestamp(901, tsNew+1+delta), []byte("odd")),
			pkttest.TCPFrameOpts(toVIPB.Reverse(), ack, pkttest.Timestamp(901, tsNew+1), []byte("odd"))},
		// A wrap of the 32-bit clock is modular arithmetic.
		{pkttest.TCPFrameOpts(toVIPB, ack, pkttest.Timestamp(0xffffffff, 901), nil),
			pkttest.TCPFrameOpts(toBackend, ack, pkttest.Timestamp(delta-1, 901), nil)},
	}
	for i, s := range steps {
		t.Logf("step %d", i)
		wantFrame(t, e.mustRun(s.in, actOK), s.want)
	}
	e.wantMetrics(map[int]uint64{metricForwardNew: 2, metricForwardCT: 4, metricReplyRevNat: 5})
}

// A SYN whose TSval is already later than the TIME_WAIT's takes the tuple
// over with the client's port and nothing to translate.
func TestClashTakesOverATimeWaitTupleWithoutDelta(t *testing.T) {
	e := clashEnv(t, 61000, 61003)
	closeTCPWithTS(t, e, vip, be1.addr, client)
	toBackend := pkttest.Flow{Src: client, Dst: be1.addr}
	opts := pkttest.SYNTimestamp(tsFIN+500, 0)
	wantFrame(t, e.mustRun(pkttest.TCPFrameOpts(toVIPB, syn, opts, nil), actOK), pkttest.TCPFrameOpts(toBackend, syn, opts, nil))
	if fwd := e.ctEntry(ctKey(toVIPB, tcp, ctmap.Forward)); fwd.Flags != 0 || fwd.TsDelta != 0 {
		t.Errorf("FORWARD entry %+v, want no SNAT and no delta", fwd)
	}
	later := pkttest.Timestamp(7, tsFIN+501)
	wantFrame(t, e.mustRun(pkttest.TCPFrameOpts(toBackend.Reverse(), syn|ack, later, nil), actOK),
		pkttest.TCPFrameOpts(toVIPB.Reverse(), syn|ack, later, nil))
}

// What keeps a port of its own: a clash with a live flow, a SYN without a
// timestamp, one whose options end (EOL) before a timestamp-like tail, and
// a tombstone without the client's last timestamp.
func TestClashWithoutTakeoverKeepsAPortOfItsOwn(t *testing.T) {
	const min, max = 61000, 61003
	eol := []byte{1, 3, 3, 7, 0, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 0}
	for name, c := range map[string]struct {
		setup func(*env)
		opts  []byte
	}{
		"live flow": {func(e *env) {
			e.mustRun(pkttest.TCPFrameOpts(toVIP, syn, pkttest.SYNTimestamp(tsFirst, 0), nil), actOK)
			e.mustRun(pkttest.TCPFrameOpts(from(be1.addr), syn|ack, pkttest.SYNTimestamp(7, tsFirst), nil), actOK)
		}, pkttest.SYNTimestamp(1, 0)},
		"no timestamp": {func(e *env) { closeTCPWithTS(t, e, vip, be1.addr, client) }, nil},
		"options end":  {func(e *env) { closeTCPWithTS(t, e, vip, be1.addr, client) }, eol},
		"no record":    {func(e *env) { closeTCP(t, e, vip, be1.addr, client) }, pkttest.SYNTimestamp(1, 0)},
	} {
		t.Run(name, func(t *testing.T) {
			e := clashEnv(t, min, max)
			c.setup(e)
			out := e.mustRun(pkttest.TCPFrameOpts(toVIPB, syn, c.opts, nil), actOK)
			port := portOfItsOwn(t, out, min, max)
			own := pkttest.Flow{Src: netip.AddrPortFrom(client.Addr(), port), Dst: be1.addr}
			wantFrame(t, out, pkttest.TCPFrameOpts(own, syn, c.opts, nil))
			if fwd := e.ctEntry(ctKey(toVIPB, tcp, ctmap.Forward)); fwd.TsDelta != 0 {
				t.Errorf("FORWARD entry %+v has a delta", fwd)
			}
		})
	}
}

// After a translated flow, the same connection again (client:40000 ->
// vipB, reopened) must stay ahead of what the backend saw, which was
// shifted: it gets a delta of its own, though no other flow clashes.
func TestReopenAfterATranslatedFlowKeepsTheBackendsTimestampsGrowing(t *testing.T) {
	e := clashEnv(t, 61000, 61003)
	closeTCPWithTS(t, e, vip, be1.addr, client)
	toBackend := pkttest.Flow{Src: client, Dst: be1.addr}
	const tsNew, delta = 300, tsFIN + 1 - 300
	e.mustRun(pkttest.TCPFrameOpts(toVIPB, syn, pkttest.SYNTimestamp(tsNew, 0), nil), actOK)
	for _, s := range []struct {
		f            pkttest.Flow
		flags        uint8
		tsval, tsecr uint32
	}{
		{toBackend.Reverse(), syn | ack, 20, tsNew + delta}, {toVIPB, ack, tsNew + 1, 20},
		{toBackend.Reverse(), fin | ack, 21, tsNew + 1 + delta}, {toVIPB, fin | ack, tsNew + 2, 21},
		{toBackend.Reverse(), ack, 22, tsNew + 2 + delta},
	} {
		e.mustRun(pkttest.TCPFrameOpts(s.f, s.flags, pkttest.Timestamp(s.tsval, s.tsecr), nil), actOK)
	}
	rep := e.ctEntry(ctKey(toBackend.Reverse(), tcp, ctmap.Reply))
	if rep.Flags&ctmap.TS == 0 || rep.TsLast != tsNew+2+delta {
		t.Fatalf("tombstone %+v, want TsLast %d (as the backend got it)", rep, tsNew+2+delta)
	}
	// The client's clock for this four-tuple went on by 5 ms.
	out := e.mustRun(pkttest.TCPFrameOpts(toVIPB, syn, pkttest.SYNTimestamp(tsNew+7, 0), nil), actOK)
	wantFrame(t, out, pkttest.TCPFrameOpts(toBackend, syn, pkttest.SYNTimestamp(tsNew+2+delta+1, 0), nil))
}

// Where the timestamp option sits: Linux's two layouts are read at a fixed
// place (fp_tcp_ts_linux), any other is walked, and a layout that only
// resembles Linux's must not be read as it. Each client packet of a
// translated flow gets its TSval shifted by the flow's delta wherever the
// option is, and one whose option list ends (EOL) before it is untouched.
func TestTranslatedTimestampFoundInAnyOptionLayout(t *testing.T) {
	e := clashEnv(t, 61000, 61003)
	closeTCPWithTS(t, e, vip, be1.addr, client)
	const tsNew = 300
	const delta = tsFIN + 1 - tsNew
	toBackend := pkttest.Flow{Src: client, Dst: be1.addr}
	e.mustRun(pkttest.TCPFrameOpts(toVIPB, syn, pkttest.SYNTimestamp(tsNew, 0), nil), actOK)

	// ts puts tsval/tsecr into the TS option at off of a copy of layout.
	ts := func(layout []byte, off int, tsval, tsecr uint32) []byte {
		b := append([]byte(nil), layout...)
		binary.BigEndian.PutUint32(b[off+2:], tsval)
		binary.BigEndian.PutUint32(b[off+6:], tsecr)
		return b
	}
	for _, c := range []struct {
		name   string
		layout []byte
		off    int // of the TS option; -1: none to translate
	}{
		{"linux", []byte{1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0}, 2},
		{"first, padded after", []byte{8, 10, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1}, 0},
		{"after a SACK block", []byte{1, 1, 5, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0}, 14},
		{"syn-like, window scale first", []byte{2, 4, 5, 0xb4, 3, 3, 7, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 8},
		{"linux-like, short kind", []byte{1, 1, 8, 9, 0, 0, 0, 0, 0, 0, 0, 0}, -1},
		{"linux-like after EOL", []byte{1, 0, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0}, -1},
	} {
		t.Run(c.name, func(t *testing.T) {
			off := c.off
			if off < 0 { // where a Linux segment would have it
				off = 2
			}
			in := ts(c.layout, off, tsNew+5, 900)
			want := in
			if c.off >= 0 {
				want = ts(c.layout, off, tsNew+5+delta, 900)
			}
			wantFrame(t, e.mustRun(pkttest.TCPFrameOpts(toVIPB, ack, in, nil), actOK),
				pkttest.TCPFrameOpts(toBackend, ack, want, nil))
		})
	}
}
