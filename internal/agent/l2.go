package agent

import (
	"context"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/fastpath-net/fastpath/internal/k8s"
	"github.com/fastpath-net/fastpath/internal/l2announce"
)

// L2Announce configures ARP announcements of LoadBalancer IPs
// (internal/l2announce); nil: off.
type L2Announce struct {
	Interfaces     []string
	LeaseNamespace string
	LeaseDuration  time.Duration
}

// startL2 opens the announcer's sockets and runs it until the returned stop,
// which releases the Leases this node holds before it returns.
func startL2(ctx context.Context, cfg Config, client kubernetes.Interface) (*l2announce.Announcer, func(), error) {
	if cfg.L2 == nil || cfg.Kubernetes == nil {
		return nil, func() {}, nil
	}
	log := orDefaultLog(cfg.Log)
	ann, err := l2announce.New(l2announce.Config{
		Interfaces: cfg.L2.Interfaces, NetNS: cfg.NetNS, Client: client,
		Identity: cfg.Kubernetes.NodeName, Namespace: cfg.L2.LeaseNamespace,
		LeaseDuration: cfg.L2.LeaseDuration, Log: log.With("component", "l2announce"),
	})
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		ann.Run(ctx)
	}()
	return ann, func() { cancel(); <-done }, nil
}

// announce hands a Kubernetes batch to the ARP announcer, which picks the
// LoadBalancer IPs this node may announce from it.
func (a *Agent) announce(u k8s.Update) {
	if a.l2 != nil {
		a.l2.Update(u.Full, u.Upserted, u.Deleted)
	}
}
