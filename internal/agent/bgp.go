package agent

import (
	"context"

	"k8s.io/client-go/kubernetes"

	"github.com/fastpath-net/fastpath/internal/bgp"
	"github.com/fastpath-net/fastpath/internal/k8s"
)

// BGP configures the BGP speaker (internal/bgp); nil: off.
type BGP struct {
	ListenPort      int
	SecretNamespace string
}

// startBGP runs the BGP controller until ctx ends. Its stop waits for the
// controller and leaves the sessions up (see bgp.Controller.Run): the
// process's exit then closes them the way graceful restart expects.
func startBGP(ctx context.Context, cfg Config, client kubernetes.Interface) (*bgp.Controller, func(), error) {
	if cfg.BGP == nil || cfg.Kubernetes == nil {
		return nil, func() {}, nil
	}
	dyn, err := k8s.NewDynamicClient(cfg.Kubernetes.Kubeconfig)
	if err != nil {
		return nil, nil, err
	}
	c := bgp.New(bgp.Config{
		Client: client, Dynamic: dyn, NodeName: cfg.Kubernetes.NodeName, NetNS: cfg.NetNS,
		ListenPort: cfg.BGP.ListenPort, SecretNamespace: cfg.BGP.SecretNamespace,
		Log: orDefaultLog(cfg.Log).With("component", "bgp"),
	})
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Run(ctx)
	}()
	return c, func() { cancel(); <-done }, nil
}
