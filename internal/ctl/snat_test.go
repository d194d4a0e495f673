package ctl

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/fastpath-net/fastpath/internal/datapath/ctmap"
	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
)

func addr(s string) lbmap.Addr { return lbmap.AddrFrom(netip.MustParseAddr(s)) }

// Masqueraded flows show their masquerade address (forward) and the client
// their replies go back to (reply).
func TestCTRowsShowMasquerade(t *testing.T) {
	fwd := ctRow(
		ctmap.Key{SAddr: addr("10.0.0.2"), DAddr: addr("10.96.0.10"), SPort: 4000, DPort: 80, Proto: lbmap.ProtoTCP, Dir: ctmap.Forward},
		ctmap.Entry{NatAddr: addr("10.0.1.5"), NatPort: 8080, Flags: ctmap.SNAT, SnatAddr: addr("192.168.0.1"), SnatPort: 61001}, 0)
	if fwd.SNAT != "192.168.0.1:61001" || fwd.Backend != "10.0.1.5:8080" || !slices.Contains(fwd.Flags, "snat") {
		t.Errorf("forward row %+v", fwd)
	}
	rep := ctRow(
		ctmap.Key{SAddr: addr("10.0.1.5"), DAddr: addr("192.168.0.1"), SPort: 8080, DPort: 61001, Proto: lbmap.ProtoTCP, Dir: ctmap.Reply},
		ctmap.Entry{NatAddr: addr("10.96.0.10"), NatPort: 80, Flags: ctmap.SNAT, SnatAddr: addr("10.0.0.2"), SnatPort: 4000}, 0)
	if rep.SNAT != "10.0.0.2:4000" || !slices.Contains(rep.Flags, "snat") {
		t.Errorf("reply row %+v", rep)
	}
	taken := ctRow(ctmap.Key{Dir: ctmap.Reply}, ctmap.Entry{Flags: ctmap.Closing | ctmap.TS, TsDelta: 4901}, 0)
	if taken.TSDelta != 4901 || !slices.Contains(taken.Flags, "ts") {
		t.Errorf("row of a flow with translated timestamps %+v", taken)
	}
	plain := ctRow(ctmap.Key{Dir: ctmap.Forward}, ctmap.Entry{}, 0)
	if plain.SNAT != "" || len(plain.Flags) != 0 {
		t.Errorf("plain row %+v", plain)
	}
	if out := FormatCT([]CTRow{fwd}); !strings.Contains(out, "192.168.0.1:61001") {
		t.Errorf("ct table lacks the masquerade address:\n%s", out)
	}
}

func TestServiceTableShowsScopeAndFlags(t *testing.T) {
	if got := flagNames(lbmap.ServiceLoadBalancer | lbmap.ServiceExtLocal); !slices.Equal(got, []string{"loadbalancer", "ext-local"}) {
		t.Errorf("flag names %v", got)
	}
	out := FormatServices([]ServiceRow{{Frontend: "192.0.2.1:80/TCP", Scope: "internal", Flags: []string{"ext-local"}}})
	if !strings.Contains(out, "192.0.2.1:80/TCP (internal) [ext-local]") {
		t.Errorf("service table:\n%s", out)
	}
}
