package routing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/fastpath-net/fastpath/internal/datapath"
	"github.com/fastpath-net/fastpath/internal/datapath/bpfmap"
	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
)

// Config is one node's routing setup.
type Config struct {
	Mode     Mode
	NodeName string // this node, whose own pod CIDRs are local
	NetNS    string // namespace path to program; "" = own
	PinDir   string // bpffs directory of the node's datapath
	// Underlay is the interface towards the other nodes; in vxlan mode the
	// tunnel's MTU is its MTU minus VXLANOverhead.
	Underlay string
	Log      *slog.Logger
}

// Router programs one node's routes to the other nodes' pod CIDRs.
type Router struct {
	cfg    Config
	log    *slog.Logger
	nl     *netlink.Handle
	dev    int // fp_vxlan's index, vxlan mode
	mtu    int // the MTU pods must use
	tunnel *tunnelObjects
	tmap   bpfmap.Map[TunnelKey, TunnelEndpoint]
	noMasq *ebpf.Map // fp_no_masq, opened at the first Sync
}

// New prepares the node for cfg.Mode: in vxlan mode it creates fp_vxlan and
// attaches tc_tunnel at its egress; in native mode it removes a fp_vxlan an
// earlier vxlan-mode agent left. Routes come with Sync.
func New(cfg Config) (*Router, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Underlay == "" {
		return nil, errors.New("routing: no underlay interface (give --external-interfaces)")
	}
	nl, err := datapath.NetlinkAt(cfg.NetNS)
	if err != nil {
		return nil, err
	}
	r := &Router{cfg: cfg, log: cfg.Log, nl: nl}
	if err := r.prepare(); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

func (r *Router) prepare() error {
	under, err := r.nl.LinkByName(r.cfg.Underlay)
	if err != nil {
		return fmt.Errorf("routing: underlay interface %s: %w", r.cfg.Underlay, err)
	}
	r.mtu = under.Attrs().MTU
	vxIfc := datapath.Iface{NetNS: r.cfg.NetNS, Name: Device}
	if r.cfg.Mode != ModeVXLAN {
		return removeVXLAN(r.nl, r.cfg.PinDir, vxIfc)
	}
	r.mtu -= VXLANOverhead
	if r.dev, err = ensureVXLAN(r.nl, r.mtu); err != nil {
		return err
	}
	if r.tunnel, err = loadTunnel(r.cfg.PinDir); err != nil {
		return err
	}
	r.tmap = bpfmap.NewKernel[TunnelKey, TunnelEndpoint](r.tunnel.Map, "fp_tunnel_map")
	return datapath.AttachEgress(r.cfg.PinDir, vxIfc, r.tunnel.Prog)
}

// Device is the interface remote pod traffic arrives on besides the
// underlay (fp_vxlan in vxlan mode, else ""): it needs the load balancer
// too, so that Service replies coming back through it are reverse-NATed.
func (r *Router) Device() string {
	if r.cfg.Mode == ModeVXLAN {
		return Device
	}
	return ""
}

// PodMTU is the MTU pod interfaces must have in this mode.
func (r *Router) PodMTU() int { return r.mtu }

// Sync makes the node's routes (and, in vxlan mode, the tunnel map) send
// every other node's pod CIDRs to it, and removes what no node has any more.
func (r *Router) Sync(nodes []Node) error {
	routes := Desired(nodes, r.cfg.NodeName)
	want := make(map[netip.Prefix]nextHop, len(routes))
	for _, rt := range routes {
		if r.cfg.Mode == ModeVXLAN {
			want[rt.Dst] = nextHop{dev: r.dev}
		} else {
			want[rt.Dst] = nextHop{gw: rt.Node}
		}
	}
	// The map first: a route into the tunnel must find its endpoint.
	if r.tmap != nil {
		if err := syncTunnelMap(r.tmap, routes); err != nil {
			return fmt.Errorf("tunnel map: %w", err)
		}
	}
	if err := r.syncNodeAddrs(nodes); err != nil {
		return fmt.Errorf("node addresses in fp_no_masq: %w", err)
	}
	n, err := routeTable{nl: r.nl}.sync(want)
	if n > 0 || err != nil {
		r.log.Info("routes to other nodes' pods programmed", "mode", string(r.cfg.Mode), "routes", len(routes), "changed", n, "error", err)
	}
	return err
}

// syncNodeAddrs writes every node's address to fp_no_masq, so pods' packets
// to nodes are never masqueraded (bpf/include/egress.h says why). The map
// is the datapath's, pinned by the agent's load, which comes after New.
func (r *Router) syncNodeAddrs(nodes []Node) error {
	if r.noMasq == nil {
		m, err := ebpf.LoadPinnedMap(filepath.Join(r.cfg.PinDir, "maps", "fp_no_masq"), nil)
		if errors.Is(err, os.ErrNotExist) {
			return nil // no load balancer here (tests of routing alone): nothing masquerades
		}
		if err != nil {
			return err
		}
		r.noMasq = m
	}
	want := map[lbmap.CIDRKey]uint8{}
	for _, n := range nodes {
		if n.IP.IsValid() {
			want[lbmap.CIDRKeyFrom(netip.PrefixFrom(n.IP, n.IP.BitLen()))] = lbmap.NoMasqNode
		}
	}
	return datapath.SyncNoMasq(datapath.NoMasqMap(r.noMasq), lbmap.NoMasqNode, want)
}

// Run watches every Node and keeps the routes in step until ctx ends. The
// first sync waits for the informer's full list, so a restarted agent never
// removes routes of nodes it has not seen yet.
func (r *Router) Run(ctx context.Context, client kubernetes.Interface) error {
	factory := informers.NewSharedInformerFactory(client, 0)
	inf := factory.Core().V1().Nodes()
	kick := make(chan struct{}, 1)
	notify := func(any) {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: notify, DeleteFunc: notify, UpdateFunc: func(_, o any) { notify(o) },
	}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), inf.Informer().HasSynced) {
		return ctx.Err()
	}
	retry := time.NewTimer(0)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-kick:
		case <-retry.C:
		}
		objs, err := inf.Lister().List(labels.Everything())
		if err == nil {
			err = r.Sync(r.nodes(objs))
		}
		if err != nil {
			r.log.Error("routing sync failed; retrying", "error", err)
			retry.Reset(time.Second)
		}
	}
}

func (r *Router) nodes(objs []*corev1.Node) []Node {
	out := make([]Node, 0, len(objs))
	for _, o := range objs {
		n, err := NodeFromObject(o)
		if err != nil {
			r.log.Warn("node ignored for routing", "error", err)
			continue
		}
		out = append(out, n)
	}
	return out
}

// Close releases handles; routes, device and pinned program stay.
func (r *Router) Close() {
	if r.tunnel != nil {
		_ = r.tunnel.Close()
	}
	if r.noMasq != nil {
		_ = r.noMasq.Close()
	}
	if r.nl != nil {
		r.nl.Close()
	}
}
