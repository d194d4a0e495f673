package agent

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"

	"k8s.io/client-go/kubernetes"

	"github.com/fastpath-net/fastpath/internal/k8s"
)

// Kubernetes configures the Kubernetes API as the source of services.
type Kubernetes struct {
	Kubeconfig    string         // kubeconfig file; "" means the pod's in-cluster configuration
	NodeName      string         // this node's Node name
	NodePortCIDRs []netip.Prefix // --nodeport-addresses; empty: every InternalIP and ExternalIP
	// ProxyName is --service-proxy-name: "" serves the Services without the
	// service.kubernetes.io/service-proxy-name label, a name only those
	// labelled with it.
	ProxyName string
}

// newKubeWatcher builds the watcher when Kubernetes is the source; nil
// otherwise.
func newKubeWatcher(cfg Config, client kubernetes.Interface) (*k8s.Watcher, error) {
	if cfg.Kubernetes == nil {
		return nil, nil
	}
	return k8s.New(k8s.Config{
		Client:        client,
		NodeName:      cfg.Kubernetes.NodeName,
		NodePortCIDRs: cfg.Kubernetes.NodePortCIDRs,
		ProxyName:     cfg.Kubernetes.ProxyName,
		Log:           orDefaultLog(cfg.Log).With("source", "kubernetes"),
	})
}

// newKubeClient builds the client of cfg's cluster; nil when Kubernetes
// is not the source.
func newKubeClient(cfg Config) (kubernetes.Interface, error) {
	if cfg.Kubernetes == nil {
		return nil, nil
	}
	return k8s.NewClient(cfg.Kubernetes.Kubeconfig)
}

// watchKube runs the watcher until ctx ends, handing its updates to the
// agent's loop. The loop takes one at a time; while it programs one, the
// watcher coalesces further changes.
func watchKube(ctx context.Context, w *k8s.Watcher, out chan<- k8s.Update, log *slog.Logger) {
	err := w.Run(ctx, func(u k8s.Update) {
		select {
		case out <- u:
		case <-ctx.Done():
		}
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		log.Error("kubernetes source stopped; the last programmed state keeps serving", "error", err)
	}
}

// applyKube applies one update from the Kubernetes source. The first one
// holds every Service and makes the table exactly that, then repairs the
// maps with a full resync: Services deleted while no agent ran go away.
func (a *Agent) applyKube(u k8s.Update) bool {
	defer a.announce(u) // once the datapath serves what it announces
	if u.Full {
		a.log.Info("kubernetes state received", "services", len(u.Upserted))
		return a.apply(u.Upserted, true)
	}
	for _, svc := range u.Upserted {
		a.upsert(svc)
	}
	for _, name := range u.Deleted {
		a.delete(name)
	}
	return a.sync(false)
}
