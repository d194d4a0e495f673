package agent

import (
	"context"
	"log/slog"
	"time"

	"github.com/fastpath-net/fastpath/internal/loadbalancer"
	"github.com/fastpath-net/fastpath/internal/servicefile"
)

// watchFile sends every good version of the services file to updates. A bad
// version is logged and skipped: the last good state stays programmed.
func watchFile(ctx context.Context, path string, interval time.Duration, updates chan<- []loadbalancer.Service, log *slog.Logger) {
	servicefile.Watch(ctx, path, orDefault(interval, time.Second),
		func(svcs []loadbalancer.Service) {
			select {
			case updates <- svcs:
			case <-ctx.Done():
			}
		},
		func(err error) {
			log.Error("services file rejected; keeping the last good state", "file", path, "error", err)
		})
}
