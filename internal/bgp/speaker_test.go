package bgp

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"

	"github.com/fastpath-net/fastpath/internal/nettopo"
	"github.com/fastpath-net/fastpath/internal/testpriv"
)

// testPort is unusual, so a listener on it in the test's own namespace
// can only be a leak.
const testPort = 11179

// rib is GoBGP's global RIB: each local prefix and its path's age.
func rib(t *testing.T, s *Speaker) map[netip.Prefix]int64 {
	t.Helper()
	out := map[netip.Prefix]int64{}
	for _, fam := range []bgp.Family{bgp.RF_IPv4_UC, bgp.RF_IPv6_UC} {
		err := s.srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: fam}, func(nlri bgp.NLRI, paths []*apiutil.Path) {
			out[nlri.(*bgp.IPAddrPrefix).Prefix] = paths[0].Age
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestSpeakerDiffs: Sync adds and withdraws only what changed (a prefix
// kept keeps its path, the same age), peers likewise, and a speaker with no
// peers is stopped. GoBGP runs in an fp- namespace, its listener there.
func TestSpeakerDiffs(t *testing.T) {
	testpriv.Require(t)
	id := make([]byte, 3)
	_, _ = rand.Read(id)
	ns, err := nettopo.NewNS("fp-bgpsp" + hex.EncodeToString(id))
	if err != nil {
		testpriv.Unavailable(t, "cannot create a network namespace: "+err.Error())
	}
	t.Cleanup(func() {
		if err := ns.Delete(); err != nil {
			t.Error(err)
		}
	})
	s := NewSpeaker(ns.Path(), testPort, slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(func() { s.Stop(t.Context()) })
	peer := func(addr string) PeerSpec {
		return PeerSpec{Peer: Peer{Address: netip.MustParseAddr(addr), ASN: 64500, HoldTime: 9 * time.Second, Keepalive: 3 * time.Second,
			GracefulRestart: true, RestartTime: time.Minute}, LocalASN: 64512, Policy: "p"}
	}
	a, b, c := netip.MustParsePrefix("203.0.113.1/32"), netip.MustParsePrefix("2001:db8::1/128"), netip.MustParsePrefix("10.244.0.0/24")
	desired := func(peers []string, ps ...netip.Prefix) Desired {
		d := Desired{ASN: 64512, RouterID: netip.MustParseAddr("192.0.2.10"), Peers: map[netip.Addr]PeerSpec{}, Prefixes: map[netip.Prefix]bool{}}
		for _, p := range peers {
			d.Peers[netip.MustParseAddr(p)] = peer(p)
		}
		for _, p := range ps {
			d.Prefixes[p] = true
		}
		return d
	}
	if err := s.Sync(t.Context(), desired([]string{"192.0.2.1"}, a, b)); err != nil {
		t.Fatal(err)
	}
	// The listener is in the namespace, and not in the test's own.
	if err := ns.Do(func() error {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", testPort), time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}); err != nil {
		t.Errorf("no listener in the namespace: %v", err)
	}
	for _, f := range []string{"tcp", "tcp6"} {
		b, err := ownSockets(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), fmt.Sprintf(":%04X 00000000:0000 0A", testPort)) || strings.Contains(string(b), fmt.Sprintf(":%04X 00000000000000000000000000000000:0000 0A", testPort)) {
			t.Errorf("port %d listens in the test's own namespace (%s)", testPort, f)
		}
	}
	before := rib(t, s)
	if len(before) != 2 || !slices.Equal(s.Advertised(), []netip.Prefix{a, b}) {
		t.Fatalf("RIB %v, advertised %v; want %s and %s", before, s.Advertised(), a, b)
	}
	time.Sleep(1100 * time.Millisecond) // ages have seconds
	if err := s.Sync(t.Context(), desired([]string{"192.0.2.1", "192.0.2.2"}, b, c)); err != nil {
		t.Fatal(err)
	}
	after := rib(t, s)
	if _, ok := after[a]; ok || len(after) != 2 {
		t.Fatalf("RIB %v: want %s withdrawn, %s and %s held", after, a, b, c)
	}
	if after[b] != before[b] {
		t.Errorf("%s was re-added (age %d, was %d): a kept prefix must not be touched", b, after[b], before[b])
	}
	if states := s.PeerStates(t.Context()); len(states) != 2 {
		t.Errorf("peers %v, want two", states)
	}
	if err := s.Sync(t.Context(), desired(nil)); err != nil || s.srv != nil {
		t.Fatalf("no peers: %v, server %v; want it stopped", err, s.srv)
	}
}

// ownSockets is /proc/thread-self/net/<table> read on a fresh locked
// thread: one in the test's own namespace. (/proc/self/net is the main
// thread's, which a netns step may have taken and kept.)
func ownSockets(table string) ([]byte, error) {
	type result struct {
		b   []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		b, err := os.ReadFile("/proc/thread-self/net/" + table)
		ch <- result{b, err}
	}()
	r := <-ch
	return r.b, r.err
}
