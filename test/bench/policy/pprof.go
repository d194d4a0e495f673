package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fastpath-net/fastpath/internal/lab"
)

// pprofAddr is where the agents serve /debug/pprof/ with -pprof: on
// loopback inside each node's namespace.
const pprofAddr = "127.0.0.1:6060"

// profiler fetches a CPU profile of every agent over a window, into
// cfg.Pprof/<what>-<node>.pprof (for `go tool pprof`); it is a no-op
// without -pprof.
type profiler struct {
	wg   sync.WaitGroup
	errs []error
}

func (b *bench) profile(ctx context.Context, what string, seconds int) *profiler {
	p := &profiler{}
	if b.cfg.Pprof == "" {
		return p
	}
	p.errs = make([]error, b.cfg.Nodes)
	for i := 1; i <= b.cfg.Nodes; i++ {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.errs[i-1] = fetchProfile(ctx, i, seconds, filepath.Join(b.cfg.Pprof, fmt.Sprintf("%s-%s.pprof", what, lab.NodeName(i))))
		}()
	}
	return p
}

// wait waits for the profiles and logs what failed.
func (p *profiler) wait(cfg config) {
	p.wg.Wait()
	for _, err := range p.errs {
		if err != nil {
			logf(cfg, "pprof: %v", err)
		}
	}
}

func fetchProfile(ctx context.Context, node, seconds int, path string) error {
	ns, err := lab.OpenNodeNS(node)
	if err != nil {
		return err
	}
	defer ns.Release()
	url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", pprofAddr, seconds)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := ns.HTTPClient(time.Duration(seconds+30) * time.Second).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s on %s: %s", url, lab.NodeName(node), resp.Status)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
