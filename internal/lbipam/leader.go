package lbipam

import (
	"context"
	"log/slog"
	"sync"
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
// one allocator works at a time. When ctx ends, run is stopped and has
// returned before the Lease is released (a standby then takes over at
// once, with no write of ours still in flight). When leadership is lost
// instead, it returns too, once run has: the caller should exit.
func RunLeaderElected(ctx context.Context, client kubernetes.Interface, e Election, log *slog.Logger, run func(context.Context)) error {
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, e.Namespace, e.Name,
		client.CoreV1(), client.CoordinationV1(), resourcelock.ResourceLockConfig{Identity: e.Identity})
	if err != nil {
		return err
	}
	var (
		mu       sync.Mutex
		stopping bool
		running  sync.WaitGroup
	)
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: lock, Name: e.Name, ReleaseOnCancel: true,
		LeaseDuration: e.LeaseDuration, RenewDeadline: e.RenewDeadline, RetryPeriod: e.RetryPeriod,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(lctx context.Context) {
				mu.Lock()
				if stopping {
					mu.Unlock()
					return
				}
				running.Add(1)
				mu.Unlock()
				defer running.Done()
				rctx, cancel := context.WithCancel(lctx)
				defer cancel()
				defer context.AfterFunc(ctx, cancel)()
				log.Info("lbipam: leading", "identity", e.Identity)
				run(rctx)
			},
			OnStoppedLeading: func() { log.Info("lbipam: not leading", "identity", e.Identity) },
			OnNewLeader:      func(id string) { log.Info("lbipam: leader", "identity", id) },
		},
	})
	if err != nil {
		return err
	}
	// The elector's context ends only once run has returned: cancelling
	// it releases the Lease.
	leCtx, leCancel := context.WithCancel(context.WithoutCancel(ctx))
	defer leCancel()
	go func() {
		select {
		case <-ctx.Done():
		case <-leCtx.Done():
			return
		}
		mu.Lock()
		stopping = true
		mu.Unlock()
		running.Wait()
		leCancel()
	}()
	le.Run(leCtx)
	// Leadership lost: client-go cancelled run's context on its way out
	// but does not wait for it.
	mu.Lock()
	stopping = true
	mu.Unlock()
	running.Wait()
	return nil
}
