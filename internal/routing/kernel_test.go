package routing

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/fastpath-net/fastpath/internal/datapath"
	"github.com/fastpath-net/fastpath/internal/nettopo"
	"github.com/fastpath-net/fastpath/internal/testpriv"
)

// twoNodes is a nettopo.Pair with a Router per node.
type twoNodes struct {
	*nettopo.Pair
	routers [2]*Router
	desired []Node
}

func newTwoNodes(t *testing.T, mode Mode) *twoNodes {
	t.Helper()
	testpriv.Require(t)
	mtu := 1500
	if mode == ModeVXLAN {
		mtu -= VXLANOverhead
	}
	pair, err := nettopo.NewPair("rt", mtu)
	if pair != nil {
		t.Cleanup(func() { _ = pair.Close() })
	}
	must(t, err)
	tn := &twoNodes{Pair: pair}
	for i, node := range pair.Nodes {
		tn.desired = append(tn.desired, Node{Name: node.Name, IP: nettopo.PairNodeIP(i), PodCIDRs: []netip.Prefix{nettopo.PairPodCIDR(i)}})
		pinDir := "/sys/fs/bpf/" + node.Name
		t.Cleanup(func() { _ = datapath.Uninstall(pinDir) })
		r, err := New(Config{Mode: mode, NodeName: node.Name, NetNS: node.Path(), PinDir: pinDir, Underlay: "eth0",
			Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		must(t, err)
		t.Cleanup(r.Close)
		tn.routers[i] = r
	}
	return tn
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// podTalk sends a message from pod 0 to a listener in pod 1 over TCP and
// checks it arrives, with a payload larger than one segment.
func (tn *twoNodes) podTalk(t *testing.T) {
	t.Helper()
	dst := "10.244.2.2:7070"
	l, err := tn.Pods[1].Listen("tcp", dst)
	must(t, err)
	defer l.Close()
	got := make(chan int, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- -1
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		got <- int(n)
	}()
	payload := make([]byte, 256<<10)
	err = tn.Pods[0].Do(func() error {
		c, err := net.DialTimeout("tcp", dst, 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Write(payload)
		return err
	})
	must(t, err)
	select {
	case n := <-got:
		if n != len(payload) {
			t.Fatalf("pod 1 received %d bytes, want %d", n, len(payload))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("pod 1 received nothing")
	}
}

func TestCrossNodePodTraffic(t *testing.T) {
	for _, mode := range []Mode{ModeNative, ModeVXLAN} {
		t.Run(string(mode), func(t *testing.T) {
			tn := newTwoNodes(t, mode)
			for _, r := range tn.routers {
				must(t, r.Sync(tn.desired))
			}
			tn.podTalk(t)
			routes, err := tn.Nodes[0].Netlink().RouteListFiltered(netlink.FAMILY_V4,
				&netlink.Route{Protocol: RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
			must(t, err)
			if len(routes) != 1 || routes[0].Dst.String() != "10.244.2.0/24" {
				t.Fatalf("node 1 has our routes %v, want one to 10.244.2.0/24", routes)
			}
			if mode == ModeVXLAN {
				if routes[0].Gw != nil {
					t.Fatalf("vxlan route %v has a gateway: traffic would bypass the tunnel", routes[0])
				}
				if got := tn.routers[0].PodMTU(); got != 1450 {
					t.Fatalf("PodMTU = %d, want 1450", got)
				}
			}
		})
	}
}

// TestRestartReconcilesRoutes: a new router adopts the routes of the one
// before, removes ours that no node has any more, and leaves other routes.
func TestRestartReconcilesRoutes(t *testing.T) {
	tn := newTwoNodes(t, ModeNative)
	must(t, tn.routers[0].Sync(tn.desired))
	nl := tn.Nodes[0].Netlink()
	stale := pfx("10.244.9.0/24")
	foreign := pfx("10.250.0.0/24")
	for dst, proto := range map[netip.Prefix]netlink.RouteProtocol{stale: RouteProtocol, foreign: 4} {
		must(t, nl.RouteAdd(&netlink.Route{Dst: &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(24, 32)},
			Gw: net.IPv4(192, 168, 77, 2), Protocol: proto}))
	}
	tn.routers[0].Close()
	r, err := New(tn.routers[0].cfg)
	must(t, err)
	defer r.Close()
	must(t, r.Sync(tn.desired))
	have, err := routeTable{nl: nl}.list()
	must(t, err)
	if _, ok := have[stale]; ok || len(have) != 1 {
		t.Fatalf("our routes after restart: %v, want only 10.244.2.0/24", have)
	}
	all, err := nl.RouteList(nil, netlink.FAMILY_V4)
	must(t, err)
	found := false
	for _, rt := range all {
		found = found || (rt.Dst != nil && rt.Dst.String() == foreign.String())
	}
	if !found {
		t.Fatal("a route of another protocol was removed")
	}
}
