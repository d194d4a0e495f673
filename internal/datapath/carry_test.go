package datapath_test

import (
	"encoding/binary"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/fastpath-net/fastpath/internal/datapath"
	"github.com/fastpath-net/fastpath/internal/datapath/bpfmap"
	"github.com/fastpath-net/fastpath/internal/datapath/ctmap"
	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
	"github.com/fastpath-net/fastpath/internal/datapath/pintest"
)

// ctV5Size is sizeof(struct fp_ct_entry) in layout v5: v6 appended
// ts_delta and ts_last.
const ctV5Size = 72

var carryCfg = datapath.Config{Sizes: datapath.Sizes{Services: 64, Backends: 64, RevNat: 64, CT: 128, SockRevNat: 64}}

// TestUpgradeCarriesV5ConnTrack stands in for an agent upgraded onto pins
// of layout v5: fp_ct is pinned with v5's 72-byte values and fp_layout
// says 5. Load, under the default refuse, carries fp_ct: every entry is in
// the new map with zero ts_delta/ts_last, the other maps keep theirs, and
// after attaching FinishCarry adds what the old programs created meanwhile
// without overwriting what the new ones wrote.
func TestUpgradeCarriesV5ConnTrack(t *testing.T) {
	cfg := carryCfg
	cfg.PinDir = tempPinDir(t)
	maps := filepath.Join(cfg.PinDir, "maps")
	be := lbmap.Backend{Port: 8080, Proto: lbmap.ProtoTCP}
	flows := map[ctmap.Key]ctmap.Entry{}
	for i := range 3 {
		k, e := ctFlow(i)
		flows[k] = e
	}
	d, err := datapath.Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.LB.Backends.Update([]uint32{7}, []lbmap.Backend{be}); err != nil {
		t.Fatal(err)
	}
	if err := bpfmap.Sync(d.CT, flows, nil); err != nil {
		t.Fatal(err)
	}
	d.Close()
	old, n := pintest.Truncate(t, filepath.Join(maps, "fp_ct"), ctV5Size)
	defer old.Close()
	if n != len(flows) {
		t.Fatalf("the v5 fp_ct holds %d entries, want %d", n, len(flows))
	}
	pintest.SetLayout(t, maps, 5)

	d, err = datapath.Load(cfg)
	if err != nil {
		t.Fatalf("load over v5 pins with a v5 fp_ct: %v", err)
	}
	defer d.Close()
	carried := d.Carried()
	if len(carried) != 1 || carried[0].Map != "fp_ct" || carried[0].FromLayout != 5 || carried[0].Entries != len(flows) {
		t.Fatalf("carried %+v; want fp_ct from v5 with %d entries", carried, len(flows))
	}
	got, err := d.CT.All()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(flows) {
		t.Errorf("the new fp_ct holds %d entries, want %d", len(got), len(flows))
	}
	for k, want := range flows {
		if got[k] != want { // want has zero TsDelta and TsLast
			t.Errorf("fp_ct %v = %+v after the upgrade, want %+v", k, got[k], want)
		}
	}
	if b, ok, err := d.LB.Backends.Lookup(7); err != nil || !ok || b != be {
		t.Errorf("backend 7 after the upgrade = %+v, %v, %v; want %+v", b, ok, err, be)
	}
	if v := pintest.Layout(t, maps); v != datapath.MapLayoutVersion {
		t.Errorf("fp_layout is %d after the upgrade, want %d", v, datapath.MapLayoutVersion)
	}

	// Until attached, the old programs serve on the old map: one flow
	// starts there; one starts with the new programs, whose entry an old
	// copy must not overwrite.
	lateKey, late := ctFlow(10)
	newKey, mine := ctFlow(11)
	if err := old.Update(&lateKey, v5Value(t, late), ebpf.UpdateAny); err != nil {
		t.Fatal(err)
	}
	stale := mine
	stale.Packets = 1
	if err := old.Update(&newKey, v5Value(t, stale), ebpf.UpdateAny); err != nil {
		t.Fatal(err)
	}
	mine.TsDelta, mine.TsLast = 12345, 678
	if err := d.CT.Update([]ctmap.Key{newKey}, []ctmap.Entry{mine}); err != nil {
		t.Fatal(err)
	}
	fin, err := d.FinishCarry()
	if err != nil {
		t.Fatal(err)
	}
	if len(fin) != 1 || fin[0].LateEntries != 1 {
		t.Errorf("FinishCarry reported %+v; want fp_ct with 1 late entry", fin)
	}
	if e, ok, _ := d.CT.Lookup(lateKey); !ok || e != late {
		t.Errorf("the flow the old programs started meanwhile = %+v, %v; want %+v", e, ok, late)
	}
	if e, _, _ := d.CT.Lookup(newKey); e != mine {
		t.Errorf("the new programs' entry became %+v; want it kept as %+v", e, mine)
	}
	if again, err := d.FinishCarry(); err != nil || len(again) != 0 {
		t.Errorf("a second FinishCarry = %+v, %v; want nothing", again, err)
	}

	// The agent after this one finds v6 pins: nothing to carry.
	d.Close()
	d, err = datapath.Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if c := d.Carried(); len(c) != 0 {
		t.Errorf("a reload over v6 pins carried %+v", c)
	}
	if n, _ := d.CT.All(); len(n) != len(flows)+2 {
		t.Errorf("fp_ct holds %d entries after a plain restart, want %d", len(n), len(flows)+2)
	}
}

// TestUpgradeRefusesWhatItCannotCarry: a v5 fp_ct of another value size
// than v5's, another changed map beside a carriable one, and a layout
// without a carriable entry are refused as before, with the pins unchanged.
func TestUpgradeRefusesWhatItCannotCarry(t *testing.T) {
	for _, tc := range []struct {
		name   string
		layout uint32
		spoil  func(t *testing.T, maps string)
		want   string
	}{
		{"ct of another size", 5, func(t *testing.T, maps string) {
			pintest.Replace(t, filepath.Join(maps, "fp_ct"), &ebpf.MapSpec{Type: ebpf.LRUHash, KeySize: 40, ValueSize: 64, MaxEntries: 128}).Close()
		}, "fp_ct ("},
		{"another map changed", 5, func(t *testing.T, maps string) {
			v5CT(t, maps)
			pintest.Replace(t, filepath.Join(maps, "fp_backends"), &ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 7}).Close()
		}, "fp_backends ("},
		{"a map of sock_lb changed", 5, func(t *testing.T, maps string) {
			v5CT(t, maps)
			pintest.Replace(t, filepath.Join(maps, "fp_sock_revnat"), &ebpf.MapSpec{Type: ebpf.LRUHash, KeySize: 4, ValueSize: 8, MaxEntries: 7}).Close()
		}, "fp_sock_revnat ("},
		{"older layout", 4, func(t *testing.T, maps string) {
			v5CT(t, maps)
		}, "layout v4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := carryCfg
			cfg.PinDir = tempPinDir(t)
			maps := filepath.Join(cfg.PinDir, "maps")
			d, err := datapath.Load(cfg)
			if err != nil {
				t.Fatal(err)
			}
			d.Close()
			tc.spoil(t, maps)
			pintest.SetLayout(t, maps, tc.layout)
			ctBefore := pintest.MapID(t, filepath.Join(maps, "fp_ct"))
			_, err = datapath.Load(cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("load = %v; want a refusal naming %q", err, tc.want)
			}
			if id := pintest.MapID(t, filepath.Join(maps, "fp_ct")); id != ctBefore {
				t.Errorf("the refused load replaced the pinned fp_ct")
			}
			if v := pintest.Layout(t, maps); v != tc.layout {
				t.Errorf("fp_layout is %d after a refusal, want %d", v, tc.layout)
			}
		})
	}
}

func ctFlow(i int) (ctmap.Key, ctmap.Entry) {
	k := ctmap.Key{
		SAddr: lbmap.AddrFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)})),
		DAddr: lbmap.AddrFrom(netip.MustParseAddr("10.96.0.10")),
		SPort: uint16(40000 + i), DPort: 80, Proto: lbmap.ProtoTCP,
	}
	e := ctmap.Entry{
		NatAddr: lbmap.AddrFrom(netip.MustParseAddr("10.1.0.2")), NatPort: 8080,
		Flags: ctmap.SeenReply, RevNatID: 3, BackendID: 7,
		Expires: uint64(1e15) + uint64(i), Packets: uint64(10 + i), Bytes: uint64(1000 + i),
	}
	return k, e
}

// v5Value is e as layout v5 stored it: without ts_delta and ts_last.
func v5Value(t *testing.T, e ctmap.Entry) []byte {
	t.Helper()
	if e.TsDelta != 0 || e.TsLast != 0 {
		t.Fatal("v5 had no timestamp fields")
	}
	b, err := binary.Append(nil, binary.NativeEndian, e)
	if err != nil {
		t.Fatal(err)
	}
	return b[:ctV5Size]
}

// v5CT pins fp_ct as layout v5 shaped it.
func v5CT(t *testing.T, maps string) {
	t.Helper()
	m, _ := pintest.Truncate(t, filepath.Join(maps, "fp_ct"), ctV5Size)
	m.Close()
}
