package agent

import (
	"context"
	"errors"

	"k8s.io/client-go/kubernetes"

	"github.com/fastpath-net/fastpath/internal/routing"
)

// Routing configures pod traffic across nodes (internal/routing).
type Routing struct {
	Mode routing.Mode
}

// startRouting prepares cross-node routing when configured and returns a
// function that keeps the routes in step with the Node objects until ctx
// ends; nil when routing is off. In vxlan mode the tunnel device joins the
// interfaces that get the load balancer: replies of Services whose backends
// are on other nodes come back through it and must be reverse-NATed.
func startRouting(cfg *Config, client kubernetes.Interface) (func(context.Context), error) {
	if cfg.Routing == nil {
		return nil, nil
	}
	if cfg.Kubernetes == nil {
		return nil, errors.New("cross-node routing learns the nodes from Kubernetes: give --kubeconfig")
	}
	if len(cfg.Network.ExternalInterfaces) == 0 {
		return nil, errors.New("cross-node routing: give the node's uplink in --external-interfaces")
	}
	log := orDefaultLog(cfg.Log)
	r, err := routing.New(routing.Config{
		Mode: cfg.Routing.Mode, NodeName: cfg.Kubernetes.NodeName, NetNS: cfg.NetNS, PinDir: cfg.PinDir,
		Underlay: cfg.Network.ExternalInterfaces[0], Log: log.With("component", "routing"),
	})
	if err != nil {
		return nil, err
	}
	if dev := r.Device(); dev != "" {
		cfg.Interfaces = append(cfg.Interfaces, dev)
	}
	// Pods get the MTU the mode leaves them, unless told otherwise.
	if cfg.CNI != nil && cfg.CNI.MTU == 0 {
		cfg.CNI.MTU = r.PodMTU()
	}
	log.Info("cross-node routing", "mode", string(cfg.Routing.Mode), "pod-mtu", r.PodMTU())
	return func(ctx context.Context) {
		defer r.Close()
		if err := r.Run(ctx, client); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("cross-node routing stopped; the routes programmed stay", "error", err)
		}
	}, nil
}
