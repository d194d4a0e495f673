package l2announce

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/fastpath-net/fastpath/internal/loadbalancer"
)

// Config is one node's part in the announcements.
type Config struct {
	Interfaces []string // where ARP is answered (the node's uplinks)
	NetNS      string   // namespace path of Interfaces; "": own
	Client     kubernetes.Interface
	Identity   string // holder name in the Leases: the Node name
	Namespace  string // of the Leases
	// LeaseDuration is how long a holder that stopped renewing (its agent
	// died) keeps an IP: the longest failover. Renewals come every
	// RetryPeriod; a holder that cannot renew within RenewDeadline stops
	// answering before its Lease can expire.
	LeaseDuration time.Duration
	Log           *slog.Logger
}

// DefaultLeaseDuration is kube-controller-manager's, as Cilium's L2
// announcements use too.
const DefaultLeaseDuration = 15 * time.Second

func (c Config) renewDeadline() time.Duration { return c.LeaseDuration * 2 / 3 }
func (c Config) retryPeriod() time.Duration   { return c.LeaseDuration * 2 / 15 }

// LeaseName is the Lease electing ip's announcer: one per IP, so Services
// sharing an IP share its holder, and IPs spread over the nodes.
func LeaseName(ip netip.Addr) string { return "fastpath-l2-" + ip.String() }

// Announcer runs the elections for the IPs this node is eligible for and
// answers ARP for those it wins.
type Announcer struct {
	cfg        Config
	responders []*responder
	kick       chan struct{}

	mu   sync.Mutex
	elig loadbalancer.Announceable
}

// New opens the ARP sockets; a missing interface is an error now rather
// than silence later.
func New(cfg Config) (*Announcer, error) {
	switch {
	case len(cfg.Interfaces) == 0:
		return nil, errors.New("l2 announcements: no interface")
	case cfg.Client == nil || cfg.Identity == "" || cfg.Namespace == "":
		return nil, errors.New("l2 announcements need the Kubernetes API, a node name and a Lease namespace")
	case cfg.LeaseDuration < time.Second:
		return nil, fmt.Errorf("l2 announcements: lease duration %s: want at least 1s", cfg.LeaseDuration)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	a := &Announcer{cfg: cfg, kick: make(chan struct{}, 1), elig: loadbalancer.Announceable{}}
	for _, ifname := range cfg.Interfaces {
		s, err := openARPSocket(cfg.NetNS, ifname)
		if err != nil {
			a.closeSockets()
			return nil, err
		}
		a.responders = append(a.responders, newResponder(s, cfg.Log))
	}
	return a, nil
}

func (a *Announcer) closeSockets() {
	for _, r := range a.responders {
		_ = r.sock.close()
	}
}

// Update takes one batch of the Service source (the same the datapath
// gets); it never blocks.
func (a *Announcer) Update(full bool, upserted []loadbalancer.Service, deleted []loadbalancer.ServiceName) {
	a.mu.Lock()
	a.elig.Apply(full, upserted, deleted)
	a.mu.Unlock()
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

func (a *Announcer) wanted() map[netip.Addr]bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.elig.IPs(netip.Addr.Is4) // ARP is IPv4's
}

// Run campaigns for every eligible IP until ctx ends; then it stops
// answering and releases the Leases it holds, so another node takes over
// without waiting for them to expire.
func (a *Announcer) Run(ctx context.Context) {
	defer a.closeSockets()
	for _, r := range a.responders {
		go r.serve()
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	running := map[netip.Addr]context.CancelFunc{}
	defer func() {
		for _, stop := range running {
			stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.kick:
		}
		want := a.wanted()
		for ip, stop := range running {
			if !want[ip] {
				stop()
				delete(running, ip)
			}
		}
		for ip := range want {
			if running[ip] != nil {
				continue
			}
			cctx, stop := context.WithCancel(ctx)
			running[ip] = stop
			wg.Add(1)
			go func() {
				defer wg.Done()
				a.campaign(cctx, ip)
			}()
		}
	}
}

// campaign stands for ip until ctx ends, again after every lost term.
func (a *Announcer) campaign(ctx context.Context, ip netip.Addr) {
	log := a.cfg.Log.With("ip", ip.String())
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, a.cfg.Namespace, LeaseName(ip),
		a.cfg.Client.CoreV1(), a.cfg.Client.CoordinationV1(), resourcelock.ResourceLockConfig{Identity: a.cfg.Identity})
	if err != nil {
		log.Error("l2 announcements: lease lock", "error", err)
		return
	}
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: lock, Name: LeaseName(ip), ReleaseOnCancel: true,
		LeaseDuration: a.cfg.LeaseDuration, RenewDeadline: a.cfg.renewDeadline(), RetryPeriod: a.cfg.retryPeriod(),
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(lctx context.Context) { a.hold(lctx, ip, log) },
			OnStoppedLeading: func() {},
		},
	})
	if err != nil {
		log.Error("l2 announcements: elector", "error", err)
		return
	}
	for ctx.Err() == nil {
		le.Run(ctx)
	}
}

// hold answers for ip while lctx (the term) lasts. The term ends before
// the Lease is released or can expire, so two nodes never answer at once.
func (a *Announcer) hold(lctx context.Context, ip netip.Addr, log *slog.Logger) {
	if lctx.Err() != nil {
		return
	}
	log.Info("l2 announcements: announcing", "interfaces", a.cfg.Interfaces)
	for _, r := range a.responders {
		r.announce(ip)
	}
	<-lctx.Done()
	for _, r := range a.responders {
		r.withdraw(ip)
	}
	log.Info("l2 announcements: stopped announcing")
}
