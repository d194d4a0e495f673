package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"

	"github.com/fastpath-net/fastpath/internal/netnsrun"
)

// DefaultListenPort is BGP's port; --bgp-listen-port changes it.
const DefaultListenPort = 179

// Speaker is one GoBGP server driven to a Desired state. It is passive:
// GoBGP dials from a goroutine on whatever OS thread runs it, which would be
// the agent's own namespace (the root one in the lab), so it never dials.
// Its listener is opened by GoBGP's event loop, which runs on a thread
// inside the node's namespace (netnsrun.Do), and so belongs to that
// namespace; accepted connections then work from any thread.
type Speaker struct {
	netns string
	port  int32
	log   *slog.Logger

	srv      *server.BgpServer
	served   chan struct{} // closed when srv's loop has returned
	asn      uint32
	routerID netip.Addr
	peers    map[netip.Addr]PeerSpec
	prefixes map[netip.Prefix]bool
}

// NewSpeaker returns a stopped speaker for the namespace at netns ("": the
// caller's) listening on port.
func NewSpeaker(netns string, port int, log *slog.Logger) *Speaker {
	return &Speaker{netns: netns, port: int32(port), log: log}
}

// Sync makes the speaker d: it starts, stops or restarts GoBGP when the ASN
// or router ID change (rare), and otherwise adds and removes only the peers
// and prefixes that differ from what it runs. A peer GoBGP refuses is
// reported and left out; the rest still apply.
func (s *Speaker) Sync(ctx context.Context, d Desired) error {
	if len(d.Peers) == 0 {
		s.Stop(ctx)
		return nil
	}
	if s.srv != nil && (s.asn != d.ASN || s.routerID != d.RouterID) {
		s.log.Info("bgp: local ASN or router ID changed; restarting the speaker", "asn", d.ASN, "router-id", d.RouterID)
		s.Stop(ctx)
	}
	if s.srv == nil {
		if err := s.start(ctx, d.ASN, d.RouterID); err != nil {
			return err
		}
	}
	errs := []error{s.syncPeers(ctx, d.Peers)}
	errs = append(errs, s.syncPrefixes(d.Prefixes))
	return errors.Join(errs...)
}

// start runs GoBGP listening on both families, or on IPv4 alone where the
// node's namespace has no IPv6.
func (s *Speaker) start(ctx context.Context, asn uint32, routerID netip.Addr) error {
	err := s.startListening(ctx, asn, routerID, []string{"0.0.0.0", "::"})
	if err != nil {
		s.log.Warn("bgp: cannot listen on IPv4 and IPv6; trying IPv4 only", "error", err)
		err = s.startListening(ctx, asn, routerID, []string{"0.0.0.0"})
	}
	return err
}

func (s *Speaker) startListening(ctx context.Context, asn uint32, routerID netip.Addr, addrs []string) error {
	srv := server.NewBgpServer(server.LoggerOption(s.log.With("component", "gobgp"), nil))
	served := make(chan struct{})
	go func() {
		defer close(served)
		err := netnsrun.Do(s.netns, func() error { srv.Serve(); return nil })
		if err != nil {
			s.log.Error("bgp: cannot enter the node's namespace", "error", err)
		}
	}()
	err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: asn, RouterId: routerID.String(), ListenPort: s.port,
		ListenAddresses: addrs,
	}})
	if err == nil {
		err = refuseLearnedRoutes(ctx, srv)
	}
	if err != nil {
		_ = srv.StopBgp(context.Background(), &api.StopBgpRequest{})
		<-served
		return fmt.Errorf("bgp: start speaker (ASN %d, router ID %s, port %d): %w", asn, routerID, s.port, err)
	}
	s.srv, s.served, s.asn, s.routerID = srv, served, asn, routerID
	s.peers, s.prefixes = map[netip.Addr]PeerSpec{}, map[netip.Prefix]bool{}
	s.log.Info("bgp: speaker started", "asn", asn, "router-id", routerID, "port", s.port)
	return nil
}

// refuseLearnedRoutes keeps what the routers send out of the RIB: nothing
// here installs it, and a router sending a full table must not cost the
// agent its memory. The global import policy also sees our own paths, so it
// rejects by source: only paths learned from a neighbour (any address)
// match; local ones have none.
func refuseLearnedRoutes(ctx context.Context, srv *server.BgpServer) error {
	const set, policy = "any-neighbor", "refuse-learned"
	if err := srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: &api.DefinedSet{
		DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR, Name: set, List: []string{"0.0.0.0/0", "::/0"},
	}}); err != nil {
		return err
	}
	if err := srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: &api.Policy{Name: policy, Statements: []*api.Statement{{
		Name:       policy + "-all",
		Conditions: &api.Conditions{NeighborSet: &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: set}},
		Actions:    &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_REJECT},
	}}}}); err != nil {
		return err
	}
	return srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name: "global", Direction: api.PolicyDirection_POLICY_DIRECTION_IMPORT,
		Policies: []*api.Policy{{Name: policy}}, DefaultAction: api.RouteAction_ROUTE_ACTION_ACCEPT,
	}})
}

// Stop ends every session with a Cease NOTIFICATION: the routers withdraw
// this node's routes at once. For an agent restart, do not call it: the
// process's exit closes the sessions without a NOTIFICATION, which graceful
// restart (RFC 4724) treats as a restart and keeps the routes.
func (s *Speaker) Stop(ctx context.Context) {
	if s.srv == nil {
		return
	}
	if err := s.srv.StopBgp(ctx, &api.StopBgpRequest{}); err != nil {
		s.log.Warn("bgp: stop speaker", "error", err)
	}
	<-s.served
	s.srv = nil
	s.log.Info("bgp: speaker stopped")
}

func (s *Speaker) syncPeers(ctx context.Context, want map[netip.Addr]PeerSpec) error {
	var errs []error
	for addr, have := range s.peers {
		if w, ok := want[addr]; ok && w == have {
			continue
		}
		if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
			errs = append(errs, fmt.Errorf("bgp: remove peer %s: %w", addr, err))
			continue
		}
		delete(s.peers, addr)
		s.log.Info("bgp: peer removed", "peer", addr)
	}
	for _, addr := range slices.SortedFunc(maps.Keys(want), netip.Addr.Compare) {
		p := want[addr]
		if _, ok := s.peers[addr]; ok {
			continue
		}
		if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: apiPeer(p)}); err != nil {
			errs = append(errs, fmt.Errorf("bgp: policy %s: peer %s: %w", p.Policy, addr, err))
			continue
		}
		s.peers[addr] = p
		s.log.Info("bgp: peer added", "peer", addr, "asn", p.ASN, "local-asn", p.LocalASN, "policy", p.Policy)
	}
	return errors.Join(errs...)
}

// apiPeer is GoBGP's configuration of p: passive, both unicast families,
// graceful restart with its timer as asked.
func apiPeer(p PeerSpec) *api.Peer {
	families := []*api.AfiSafi{}
	for _, afi := range []api.Family_Afi{api.Family_AFI_IP, api.Family_AFI_IP6} {
		families = append(families, &api.AfiSafi{
			Config:            &api.AfiSafiConfig{Family: &api.Family{Afi: afi, Safi: api.Family_SAFI_UNICAST}, Enabled: true},
			MpGracefulRestart: &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: p.GracefulRestart}},
		})
	}
	return &api.Peer{
		Conf: &api.PeerConf{NeighborAddress: p.Address.String(), PeerAsn: p.ASN, LocalAsn: p.LocalASN, AuthPassword: p.Password,
			Description: "policy " + p.Policy},
		Timers: &api.Timers{Config: &api.TimersConfig{
			HoldTime: uint64(p.HoldTime.Seconds()), KeepaliveInterval: uint64(p.Keepalive.Seconds()), ConnectRetry: 5,
		}},
		Transport:       &api.Transport{PassiveMode: true},
		GracefulRestart: &api.GracefulRestart{Enabled: p.GracefulRestart, RestartTime: uint32(p.RestartTime.Seconds())},
		AfiSafis:        families,
	}
}

// syncPrefixes adds and withdraws only the prefixes that changed.
func (s *Speaker) syncPrefixes(want map[netip.Prefix]bool) error {
	var add, del []*apiutil.Path
	for p := range want {
		if !s.prefixes[p] {
			if path, err := localPath(p); err == nil {
				add = append(add, path)
			}
		}
	}
	for p := range s.prefixes {
		if !want[p] {
			if path, err := localPath(p); err == nil {
				del = append(del, path)
			}
		}
	}
	var errs []error
	if len(del) > 0 {
		if err := s.srv.DeletePath(apiutil.DeletePathRequest{Paths: del}); err != nil {
			errs = append(errs, fmt.Errorf("bgp: withdraw %d prefixes: %w", len(del), err))
		} else {
			for _, p := range del {
				delete(s.prefixes, p.Nlri.(*bgp.IPAddrPrefix).Prefix)
			}
		}
	}
	if len(add) > 0 {
		resps, err := s.srv.AddPath(apiutil.AddPathRequest{Paths: add})
		// AddPath answers per path (and, on any failure, an error with no
		// answers): prefixes are remembered only once GoBGP holds them.
		for i, r := range resps {
			if r.Error == nil {
				s.prefixes[add[i].Nlri.(*bgp.IPAddrPrefix).Prefix] = true
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("bgp: advertise %d prefixes: %w", len(add), err))
		}
	}
	if len(add)+len(del) > 0 {
		s.log.Debug("bgp: prefixes changed", "advertised", len(add), "withdrawn", len(del), "total", len(s.prefixes))
	}
	return errors.Join(errs...)
}

// localPath is a locally originated route to p; GoBGP replaces the
// unspecified next hop with the session's local address.
func localPath(p netip.Prefix) (*apiutil.Path, error) {
	nlri, err := bgp.NewIPAddrPrefix(p)
	if err != nil {
		return nil, err
	}
	origin := bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP)
	if p.Addr().Is4() {
		nh, err := bgp.NewPathAttributeNextHop(netip.IPv4Unspecified())
		if err != nil {
			return nil, err
		}
		return &apiutil.Path{Family: bgp.RF_IPv4_UC, Nlri: nlri, Attrs: []bgp.PathAttributeInterface{origin, nh}}, nil
	}
	mp, err := bgp.NewPathAttributeMpReachNLRI(bgp.RF_IPv6_UC, []bgp.PathNLRI{{NLRI: nlri}}, netip.IPv6Unspecified())
	if err != nil {
		return nil, err
	}
	return &apiutil.Path{Family: bgp.RF_IPv6_UC, Nlri: nlri, Attrs: []bgp.PathAttributeInterface{origin, mp}}, nil
}

// Advertised is what the speaker advertises now, for tests and fastpathctl.
func (s *Speaker) Advertised() []netip.Prefix {
	return slices.SortedFunc(maps.Keys(s.prefixes), func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
}

// PeerStates is each peer's session state as GoBGP reports it.
func (s *Speaker) PeerStates(ctx context.Context) map[netip.Addr]string {
	out := map[netip.Addr]string{}
	if s.srv == nil {
		return out
	}
	_ = s.srv.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
		if a, err := netip.ParseAddr(p.GetConf().GetNeighborAddress()); err == nil {
			out[a] = p.GetState().GetSessionState().String()
		}
	})
	return out
}
