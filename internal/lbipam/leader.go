package lbipam

import (
	"context"
	"log/slog"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Election says where the Lease is and how fast leadership moves.
type Election struct {
	Namespace, Name string // of the Lease
	Identity        string // this instance, unique (the pod name)
	LeaseDuration   time.Duration
	RenewDeadline   time.Duration
	RetryPeriod     time.Duration
}

// DefaultElection has kube-controller-manager's timings.
func DefaultElection(identity string) Election {
	return Election{Namespace: "kube-system", Name: "fastpath-lbipam", Identity: identity,
		LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second}
}

// RunLeaderElected runs run only while this instance holds the Lease, so
// one allocator works at a time. It returns when ctx ends (the Lease is
// released, so a standby takes over at once) or when leadership is lost
// (the caller exits and restarts: its view may be stale).
func RunLeaderElected(ctx context.Context, client kubernetes.Interface, e Election, log *slog.Logger, run func(context.Context)) error {
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, e.Namespace, e.Name,
		client.CoreV1(), client.CoordinationV1(), resourcelock.ResourceLockConfig{Identity: e.Identity})
	if err != nil {
		return err
	}
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: lock, Name: e.Name, ReleaseOnCancel: true,
		LeaseDuration: e.LeaseDuration, RenewDeadline: e.RenewDeadline, RetryPeriod: e.RetryPeriod,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				log.Info("lbipam: leading", "identity", e.Identity)
				run(ctx)
			},
			OnStoppedLeading: func() { log.Info("lbipam: not leading", "identity", e.Identity) },
			OnNewLeader:      func(id string) { log.Info("lbipam: leader", "identity", id) },
		},
	})
	if err != nil {
		return err
	}
	le.Run(ctx)
	return nil
}
