package datapath_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/fastpath-net/fastpath/internal/datapath"
	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
	"github.com/fastpath-net/fastpath/internal/nettopo"
	"github.com/fastpath-net/fastpath/internal/testpriv"
)

// tempPinDir returns a fresh directory on bpffs that is removed at the end.
func tempPinDir(t *testing.T) string {
	t.Helper()
	testpriv.Require(t)
	if _, err := os.Stat("/sys/fs/bpf"); err != nil {
		testpriv.Unavailable(t, "bpffs is not mounted at /sys/fs/bpf")
	}
	dir, err := os.MkdirTemp("/sys/fs/bpf", "fp-test-")
	if err != nil {
		testpriv.Unavailable(t, "cannot create a directory on bpffs: "+err.Error())
	}
	t.Cleanup(func() {
		if err := datapath.Uninstall(dir); err != nil {
			t.Errorf("uninstall: %v", err)
		}
	})
	return dir
}

func TestLoadReusesPinnedMaps(t *testing.T) {
	pin := tempPinDir(t)
	cfg := datapath.Config{PinDir: pin, Sizes: datapath.Sizes{Services: 64, Backends: 64, RevNat: 64, CT: 128, SockRevNat: 64}}
	d1, err := datapath.Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	be := lbmap.Backend{Port: 8080, Proto: lbmap.ProtoTCP}
	if err := d1.LB.Backends.Update([]uint32{7}, []lbmap.Backend{be}); err != nil {
		t.Fatal(err)
	}
	d1.Close()

	d2, err := datapath.Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	got, ok, err := d2.LB.Backends.Lookup(7)
	if err != nil || !ok || got != be {
		t.Fatalf("after reload backend 7 = %+v, %v, %v; want %+v", got, ok, err, be)
	}
	for _, m := range []string{"fp_services", "fp_backends", "fp_rev_nat", "fp_ct", "fp_sock_revnat", "fp_metrics", "fp_affinity"} {
		if _, err := os.Stat(filepath.Join(pin, "maps", m)); err != nil {
			t.Errorf("map %s not pinned: %v", m, err)
		}
	}
}

func TestLoadRejectsResizedPinnedMap(t *testing.T) {
	pin := tempPinDir(t)
	d, err := datapath.Load(datapath.Config{PinDir: pin, Sizes: datapath.Sizes{CT: 128}})
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	_, err = datapath.Load(datapath.Config{PinDir: pin, Sizes: datapath.Sizes{CT: 256}})
	if err == nil {
		t.Fatal("loading with a different CT size over pinned maps succeeded; want an incompatibility error")
	}
}

func TestLoadRefusesNonBPFFS(t *testing.T) {
	testpriv.Require(t)
	_, err := datapath.Load(datapath.Config{PinDir: t.TempDir()})
	if err == nil {
		t.Fatal("Load on a tmpfs directory succeeded; want an error saying it is not bpffs")
	}
}

func TestAttachTCSurvivesReloadAndDetaches(t *testing.T) {
	for _, mode := range []datapath.TCMode{datapath.TCX, datapath.TCClsact} {
		t.Run(string(mode), func(t *testing.T) {
			pin := tempPinDir(t)
			star, err := nettopo.NewStar("ld", "a")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { star.Close() })
			ifc := datapath.Iface{NetNS: star.Node.Path(), Name: star.Hosts[0].NodeIf}
			cfg := datapath.Config{PinDir: pin, TC: mode, Sizes: datapath.Sizes{CT: 128}}

			for round := 0; round < 2; round++ { // the second round is an agent restart
				d, err := datapath.Load(cfg)
				if err != nil {
					t.Fatal(err)
				}
				got, err := d.AttachTC(ifc)
				d.Close()
				if err != nil {
					t.Fatalf("round %d: %v", round, err)
				}
				if got != mode {
					t.Fatalf("round %d: attached with %q, want %q", round, got, mode)
				}
				if n := countIngressPrograms(t, star.Node, ifc.Name); n != 1 {
					t.Fatalf("round %d: %d programs at ingress of %s, want exactly 1", round, n, ifc)
				}
			}
			if err := datapath.DetachTC(pin, ifc); err != nil {
				t.Fatal(err)
			}
			if n := countIngressPrograms(t, star.Node, ifc.Name); n != 0 {
				t.Fatalf("after detach: %d programs at ingress of %s, want 0", n, ifc)
			}
		})
	}
}

// countIngressPrograms counts TCX programs and cls_bpf filters at ingress.
func countIngressPrograms(t *testing.T, ns *nettopo.NS, ifname string) int {
	t.Helper()
	idx, err := ns.Ifindex(ifname)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	err = ns.Do(func() error {
		res, err := link.QueryPrograms(link.QueryOptions{Target: idx, Attach: ebpf.AttachTCXIngress})
		if err == nil {
			n += len(res.Programs)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	filters, err := ns.Netlink().FilterList(mustLink(t, ns, ifname), netlink.HANDLE_MIN_INGRESS)
	if err != nil {
		t.Fatal(err)
	}
	return n + len(filters)
}

func mustLink(t *testing.T, ns *nettopo.NS, name string) netlink.Link {
	t.Helper()
	l, err := ns.Netlink().LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}
