package health

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Check is one Service's health check: the node port it is served on and
// the count it reports.
type Check struct {
	Port           uint16
	LocalEndpoints int
}

// Name is a Service's namespace and name.
type Name struct{ Namespace, Name string }

func (n Name) String() string { return n.Namespace + "/" + n.Name }

// ListenFunc opens the listeners of one health-check port: one per node
// address kube-proxy would listen on (all addresses, or those inside
// --nodeport-addresses), inside the node's namespace.
type ListenFunc func(port uint16) ([]net.Listener, error)

// Services runs the healthCheckNodePort servers (kube-proxy's
// ServiceHealthServer): a Service's port answers 200 while this node has a
// ready local endpoint for it and the proxy is healthy, 503 otherwise, so
// an external load balancer sends traffic only to nodes that keep the
// client's source address and can serve it.
type Services struct {
	listen ListenFunc
	proxy  *Proxy
	log    *slog.Logger
	// OnListenError, when set, hears once about each port a Service's
	// health check cannot open (kube-proxy sends a Warning Event); set it
	// before the first Sync.
	OnListenError func(Name, uint16, error)

	// RetryEvery is how often ports that failed to open are tried again
	// between Syncs (a freed port should not wait for the next change).
	RetryEvery time.Duration

	mu     sync.RWMutex
	svcs   map[Name]*instance
	failed map[Name]uint16 // the port that last failed to open, reported once
	last   map[Name]Check  // the last Sync's checks, for retries
	retry  *time.Timer     // pending retry while failed is not empty
	closed bool
}

type instance struct {
	port      uint16
	servers   []*http.Server
	endpoints int
}

// NewServices returns a server set with nothing open.
func NewServices(listen ListenFunc, proxy *Proxy, log *slog.Logger) *Services {
	return &Services{listen: listen, proxy: proxy, log: log, RetryEvery: 5 * time.Second,
		svcs: map[Name]*instance{}, failed: map[Name]uint16{}}
}

// Sync makes the open servers those of checks: servers of Services gone
// or moved to another port close, new ones open, and counts are updated.
// A port that cannot be opened is reported once (log line, OnListenError)
// and retried at every Sync and every RetryEvery; the others are served
// regardless.
func (s *Services) Sync(checks map[Name]Check) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last = maps.Clone(checks)
	return s.sync()
}

// retryFailed runs a Sync of the last checks, for the ports that failed.
func (s *Services) retryFailed() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.retry = nil
	if !s.closed {
		_ = s.sync()
	}
}

// sync makes the servers those of s.last; the caller holds s.mu.
func (s *Services) sync() error {
	checks := s.last
	for name := range s.failed {
		if c, ok := checks[name]; !ok || c.Port != s.failed[name] {
			delete(s.failed, name)
		}
	}
	for name, inst := range s.svcs {
		if c, ok := checks[name]; !ok || c.Port != inst.port {
			s.log.Info("closing health check", "service", name.String(), "port", inst.port)
			inst.close()
			delete(s.svcs, name)
		}
	}
	var errs []error
	for _, name := range slices.SortedFunc(maps.Keys(checks), compareNames) {
		c := checks[name]
		if inst := s.svcs[name]; inst != nil {
			inst.endpoints = c.LocalEndpoints
			continue
		}
		inst, err := s.open(name, c.Port)
		if err != nil {
			errs = append(errs, fmt.Errorf("health check of service %s on port %d: %w", name, c.Port, err))
			if _, reported := s.failed[name]; !reported {
				s.failed[name] = c.Port
				s.log.Error("cannot serve health check; retrying", "service", name.String(), "port", c.Port, "error", err)
				if s.OnListenError != nil {
					s.OnListenError(name, c.Port, err)
				}
			}
			continue
		}
		delete(s.failed, name)
		inst.endpoints = c.LocalEndpoints
		s.svcs[name] = inst
		s.log.Info("serving health check", "service", name.String(), "port", c.Port)
	}
	if len(s.failed) > 0 && s.retry == nil && s.RetryEvery > 0 {
		s.retry = time.AfterFunc(s.RetryEvery, s.retryFailed)
	}
	return errors.Join(errs...)
}

func compareNames(a, b Name) int {
	return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
}

func (s *Services) open(name Name, port uint16) (*instance, error) {
	ls, err := s.listen(port)
	if err != nil {
		return nil, err
	}
	inst := &instance{port: port}
	for _, l := range ls {
		srv := &http.Server{Handler: s.handler(name), ReadHeaderTimeout: 10 * time.Second}
		inst.servers = append(inst.servers, srv)
		go func() {
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("health check server stopped", "service", name.String(), "address", l.Addr().String(), "error", err)
			}
		}()
	}
	return inst, nil
}

func (inst *instance) close() {
	for _, srv := range inst.servers {
		_ = srv.Close()
	}
}

// Close stops every server.
func (s *Services) Close() {
	_ = s.Sync(nil)
	s.mu.Lock()
	s.closed = true
	if s.retry != nil {
		s.retry.Stop()
	}
	s.mu.Unlock()
}

// handler answers exactly as kube-proxy's hcHandler: the JSON is written
// with fmt, tabs and all, and a request to a server being closed gets an
// empty 200.
func (s *Services) handler(name Name) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s.mu.RLock()
		inst := s.svcs[name]
		var count int
		if inst != nil {
			count = inst.endpoints
		}
		s.mu.RUnlock()
		if inst == nil {
			return
		}
		healthy := s.proxy.Health().Healthy
		setJSONHeaders(w.Header())
		w.Header().Set("X-Load-Balancing-Endpoint-Weight", strconv.Itoa(count))
		if count != 0 && healthy {
			w.WriteHeader(http.StatusOK)
		} else {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprintf(w, "{\n\t\"service\": {\n\t\t\"namespace\": %q,\n\t\t\"name\": %q\n\t},\n\t\"localEndpoints\": %d,\n\t\"serviceProxyHealthy\": %v\n}",
			name.Namespace, name.Name, count, healthy)
	})
}
