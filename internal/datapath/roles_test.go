package datapath_test

import (
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/fastpath-net/fastpath/internal/datapath"
	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
	"github.com/fastpath-net/fastpath/internal/nettopo"
)

// Each role has its own program instance; re-attaching an interface with
// another role (an agent restarted with other flags) swaps the instance in
// place, leaving one program at its ingress.
func TestAttachTCRoleAttachesThatRolesInstance(t *testing.T) {
	for _, mode := range []datapath.TCMode{datapath.TCX, datapath.TCClsact} {
		t.Run(string(mode), func(t *testing.T) {
			pin := tempPinDir(t)
			star, err := nettopo.NewStar("role", "a")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { star.Close() })
			ifc := datapath.Iface{NetNS: star.Node.Path(), Name: star.Hosts[0].NodeIf}
			d, err := datapath.Load(datapath.Config{PinDir: pin, TC: mode, Sizes: datapath.Sizes{CT: 128}})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			defer datapath.DetachTC(pin, ifc)
			for _, role := range []datapath.IfaceRole{datapath.RoleExternal, datapath.RoleInternal, datapath.RoleExternal} {
				if _, err := d.AttachTCRole(ifc, role); err != nil {
					t.Fatal(err)
				}
				want := progID(t, d.TCProgramFor(role))
				if got := attachedIDs(t, star.Node, ifc.Name); len(got) != 1 || got[0] != want {
					t.Fatalf("%s: programs %v at ingress, want exactly the %s instance %d", role, got, role, want)
				}
			}
			if progID(t, d.TCProgramFor(datapath.RoleInternal)) == progID(t, d.TCProgramFor(datapath.RoleExternal)) {
				t.Fatal("both roles have the same program")
			}
		})
	}
}

func progID(t *testing.T, p *ebpf.Program) ebpf.ProgramID {
	t.Helper()
	info, err := p.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, ok := info.ID()
	if !ok {
		t.Fatal("no program ID")
	}
	return id
}

// attachedIDs lists the TCX programs and cls_bpf filters at ingress.
func attachedIDs(t *testing.T, ns *nettopo.NS, ifname string) []ebpf.ProgramID {
	t.Helper()
	idx, err := ns.Ifindex(ifname)
	if err != nil {
		t.Fatal(err)
	}
	var ids []ebpf.ProgramID
	_ = ns.Do(func() error {
		res, err := link.QueryPrograms(link.QueryOptions{Target: idx, Attach: ebpf.AttachTCXIngress})
		if err == nil {
			for _, p := range res.Programs {
				ids = append(ids, p.ID)
			}
		}
		return nil
	})
	filters, err := ns.Netlink().FilterList(mustLink(t, ns, ifname), netlink.HANDLE_MIN_INGRESS)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range filters {
		if bf, ok := f.(*netlink.BpfFilter); ok {
			ids = append(ids, ebpf.ProgramID(bf.Id))
		}
	}
	return ids
}

// Load writes the masquerade settings to fp_config, defaults the port
// range, and refuses settings the datapath cannot use.
func TestLoadWritesMasquerade(t *testing.T) {
	pin := tempPinDir(t)
	read := func() lbmap.Config {
		t.Helper()
		m, err := ebpf.LoadPinnedMap(filepath.Join(pin, "maps", "fp_config"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		var c lbmap.Config
		if err := m.Lookup(uint32(0), &c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	ip := netip.MustParseAddr("10.1.2.3")
	for _, c := range []struct {
		m    datapath.Masquerade
		want lbmap.Config
	}{
		{datapath.Masquerade{IP: ip}, lbmap.Config{MasqAddr: lbmap.AddrFrom(ip), SnatPortMin: 61000, SnatPortMax: 65535}},
		{datapath.Masquerade{IP: ip, PortMin: 50000, PortMax: 50009}, lbmap.Config{MasqAddr: lbmap.AddrFrom(ip), SnatPortMin: 50000, SnatPortMax: 50009}},
		{datapath.Masquerade{}, lbmap.Config{SnatPortMin: 61000, SnatPortMax: 65535}},
	} {
		d, err := datapath.Load(datapath.Config{PinDir: pin, Masquerade: c.m})
		if err != nil {
			t.Fatal(err)
		}
		d.Close()
		if got := read(); got != c.want {
			t.Errorf("%+v: fp_config %+v, want %+v", c.m, got, c.want)
		}
	}
	for _, bad := range []datapath.Masquerade{
		{IP: netip.MustParseAddr("fd00::1")},
		{IP: ip, PortMin: 62000, PortMax: 61000},
	} {
		if d, err := datapath.Load(datapath.Config{PinDir: pin, Masquerade: bad}); err == nil {
			d.Close()
			t.Errorf("Load with %+v succeeded; want an error", bad)
		}
	}
}

func TestFirstIPv4(t *testing.T) {
	tempPinDir(t) // skips without privileges
	star, err := nettopo.NewStar("ip", "a", "b")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { star.Close() })
	got, err := datapath.FirstIPv4(star.Node.Path(), "lo", star.Hosts[1].NodeIf, star.Hosts[0].NodeIf)
	if err != nil || got != star.Hosts[1].NodeIP {
		t.Fatalf("FirstIPv4 = %v, %v; want %v (lo has no global address)", got, err, star.Hosts[1].NodeIP)
	}
	if _, err := datapath.FirstIPv4(star.Node.Path(), "lo"); err == nil {
		t.Fatal("FirstIPv4 of lo alone succeeded; want an error")
	}
}
