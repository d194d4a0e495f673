package agent

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/fastpath-net/fastpath/internal/ctl"
	"github.com/fastpath-net/fastpath/internal/endpoint"
)

// Version is the build's version, set by the command (its -X flag).
var Version = "dev"

// errorRing keeps the newest warnings and errors the agent logged, for
// fastpathctl status ("last errors"); every record still goes on to the
// agent's own handler.
type errorRing struct {
	inner slog.Handler
	ring  *recentErrors
}

type recentErrors struct {
	mu   sync.Mutex
	recs []ctl.LogRecord
}

const keepErrors = 20

func withErrorRing(l *slog.Logger) (*slog.Logger, *recentErrors) {
	r := &recentErrors{}
	return slog.New(errorRing{inner: l.Handler(), ring: r}), r
}

func (h errorRing) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn || h.inner.Enabled(ctx, l)
}

func (h errorRing) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		msg := r.Message
		r.Attrs(func(a slog.Attr) bool {
			msg += " " + a.String()
			return true
		})
		h.ring.add(ctl.LogRecord{Time: r.Time, Level: r.Level.String(), Msg: msg})
	}
	if !h.inner.Enabled(ctx, r.Level) {
		return nil
	}
	return h.inner.Handle(ctx, r)
}

func (h errorRing) WithAttrs(as []slog.Attr) slog.Handler {
	return errorRing{inner: h.inner.WithAttrs(as), ring: h.ring}
}

func (h errorRing) WithGroup(name string) slog.Handler {
	return errorRing{inner: h.inner.WithGroup(name), ring: h.ring}
}

func (r *recentErrors) add(rec ctl.LogRecord) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.recs) == keepErrors {
		r.recs = append(r.recs[:0], r.recs[1:]...)
	}
	r.recs = append(r.recs, rec)
}

func (r *recentErrors) list() []ctl.LogRecord {
	if r == nil {
		return []ctl.LogRecord{}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]ctl.LogRecord{}, r.recs...)
}

// syncState is what the loop last programmed, read by the status handler
// on another goroutine.
type syncState struct {
	mu                                   sync.Mutex
	at                                   time.Time
	err                                  string
	services, frontends, backends, dirty int
	attachPending                        bool
}

func (s *syncState) set(a *Agent, err error) {
	c := a.rec.Counts()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.at, s.err = time.Now(), ""
	if err != nil {
		s.err = err.Error()
	}
	s.services, s.frontends, s.backends, s.dirty = a.table.Len(), c.Frontends, c.Backends, a.table.Dirty()
	s.attachPending = a.attachPending
}

// statusHandler serves ctl.AgentStatus.
func (a *Agent) statusHandler(started time.Time) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := a.status(r.Context(), started)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(st)
	})
}

func (a *Agent) status(ctx context.Context, started time.Time) ctl.AgentStatus {
	cfg := a.cfg
	tc := string(cfg.TC)
	if tc == "" {
		tc = "auto"
	}
	st := ctl.AgentStatus{
		Version: Version, StartedAt: started, Source: "services-file", Endpoints: -1,
		Datapath: ctl.DatapathMode{
			TC: tc, Interfaces: append(append([]string{}, cfg.Interfaces...), cfg.Network.ExternalInterfaces...),
			SocketLB: cfg.Cgroup != "", Policy: cfg.Policy, CNI: cfg.CNI != nil, PinDir: a.dp.PinDir(),
		},
		Errors: a.errors.list(),
		Nodes:  a.nodeHealth(),
	}
	if cfg.Routing != nil {
		st.Datapath.Routing = string(cfg.Routing.Mode)
	}
	if eps := a.endpoints(); eps != nil {
		st.Endpoints = len(eps.List())
	}
	s := &a.syncState
	s.mu.Lock()
	st.LastSync, st.LastSyncError = s.at, s.err
	st.Services, st.Frontends, st.Backends, st.Pending = s.services, s.frontends, s.backends, s.dirty
	if s.attachPending {
		st.Datapath.AttachState = "held back until the recreated maps are programmed"
	}
	s.mu.Unlock()
	if a.client != nil {
		st.Source = "kubernetes"
		st.APIServer = a.probeAPIServer(ctx)
	}
	return st
}

// probeAPIServer asks the apiserver's /readyz, as the agent's client
// reaches it.
func (a *Agent) probeAPIServer(ctx context.Context) *ctl.Reachability {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	start := time.Now()
	err := a.client.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).Error()
	r := &ctl.Reachability{OK: err == nil, LatencyMS: float64(time.Since(start).Microseconds()) / 1000}
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

// endpoints is the CNI's endpoint store, nil without the CNI.
func (a *Agent) endpoints() *endpoint.Store {
	a.epsMu.Lock()
	defer a.epsMu.Unlock()
	return a.eps
}
