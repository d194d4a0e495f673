package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fastpath-net/fastpath/internal/ctl"
	"github.com/fastpath-net/fastpath/internal/health"
	"github.com/fastpath-net/fastpath/internal/k8s"
	"github.com/fastpath-net/fastpath/internal/loadbalancer"
	"github.com/fastpath-net/fastpath/internal/metrics"
	"github.com/fastpath-net/fastpath/internal/netnsrun"
)

// Ops configures the agent's operational endpoints, all opened inside
// --netns; an empty address turns one off.
type Ops struct {
	MetricsAddr string // /metrics (kube-proxy: 127.0.0.1:10249)
	HealthzAddr string // /healthz and /livez (kube-proxy: 0.0.0.0:10256)
	PprofAddr   string // /debug/pprof/
	// HealthTimeout: /healthz fails when a change waits longer than this
	// for a successful sync (kube-proxy: twice its 30s sync period).
	HealthTimeout time.Duration
}

// DefaultHealthTimeout is kube-proxy's default.
const DefaultHealthTimeout = 60 * time.Second

// maxPendingTriggers bounds the trigger times kept while syncs fail: an
// outage of the maps must not grow the agent without limit.
const maxPendingTriggers = 4096

// ops is the running side of Ops: the agent's loop tells it what arrived
// and what got programmed; it keeps the metrics and health answers true.
type ops struct {
	log      *slog.Logger
	metrics  *metrics.Metrics // nil without --metrics-addr
	proxy    *health.Proxy
	services *health.Services
	checks   map[health.Name]health.Check // Services with a health-check node port
	triggers []time.Time                  // trigger times of changes not yet programmed
	// report, when set, puts a Service's sync failure on the Service (an
	// Event); failed are the Services it was told about, cleared once a
	// sync succeeds.
	report func(loadbalancer.ServiceName, error)
	failed map[loadbalancer.ServiceName]bool
}

// startOps opens the endpoints of cfg.Ops: /metrics and the agent's
// status for fastpathctl on the metrics address, health on its own. A listener that cannot open
// (the port taken, say by a kube-proxy still running) is retried every 5s
// with a log line, as kube-proxy does, rather than stopping the agent.
func (a *Agent) startOps(ctx context.Context, started time.Time) *ops {
	cfg := a.cfg.Ops
	o := &ops{log: a.log, checks: map[health.Name]health.Check{}, failed: map[loadbalancer.ServiceName]bool{}}
	eligible := func() bool { return true } // a services file has no Node to check
	if a.kube != nil {
		eligible = a.kube.NodeEligible
	}
	o.proxy = health.NewProxy(orDefault(cfg.HealthTimeout, DefaultHealthTimeout), eligible)
	o.proxy.Updated() // starting counts as healthy, as kube-proxy's SyncLoop says
	o.services = health.NewServices(a.healthCheckListener(), o.proxy, a.log.With("component", "health-check"))
	if a.kube != nil {
		o.report = a.kube.ReportProgramError
		o.services.OnListenError = func(n health.Name, port uint16, err error) {
			a.kube.ReportHealthCheckError(loadbalancer.ServiceName{Namespace: n.Namespace, Name: n.Name}, port, err)
		}
	}
	if cfg.MetricsAddr != "" {
		o.metrics = metrics.New()
		o.metrics.AddDatapath(a.dp.PinDir(), a.log)
		o.metrics.SetProgrammedFunc(a.programmed)
		o.metrics.SetNodeProbesFunc(a.nodeProbes)
		mux := http.NewServeMux()
		mux.Handle("/metrics", o.metrics.Handler())
		mux.Handle(ctl.AgentStatusPath, a.statusHandler(started)) // fastpathctl status
		go a.serve(ctx, "metrics", cfg.MetricsAddr, mux)
	}
	if cfg.HealthzAddr != "" {
		go a.serve(ctx, "healthz", cfg.HealthzAddr, o.proxy.Handler())
	}
	if cfg.PprofAddr != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		go a.serve(ctx, "pprof", cfg.PprofAddr, mux)
	}
	return o
}

// serve runs one HTTP server until ctx ends, (re)trying to listen every 5s.
func (a *Agent) serve(ctx context.Context, what, addr string, h http.Handler) {
	for {
		l, err := netnsrun.Listen(a.cfg.NetNS, "tcp", addr)
		if err == nil {
			a.log.Info("serving "+what, "address", l.Addr().String(), "netns", a.cfg.NetNS)
			srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
			stop := context.AfterFunc(ctx, func() { _ = srv.Close() })
			err = srv.Serve(l)
			stop()
			if errors.Is(err, http.ErrServerClosed) {
				return
			}
		}
		a.log.Error("cannot serve "+what+"; retrying in 5s", "address", addr, "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Second):
		}
	}
}

// healthCheckListener listens where kube-proxy does: on every IPv4 address
// of the node, or with --nodeport-addresses on the node's interface
// addresses inside those CIDRs.
func (a *Agent) healthCheckListener() health.ListenFunc {
	var cidrs []netip.Prefix
	if a.cfg.Kubernetes != nil {
		cidrs = a.cfg.Kubernetes.NodePortCIDRs
	}
	return func(port uint16) ([]net.Listener, error) {
		var out []net.Listener
		err := netnsrun.Do(a.cfg.NetNS, func() error {
			addrs, err := listenAddrs(cidrs)
			if err != nil {
				return err
			}
			for _, ip := range addrs {
				l, err := net.Listen("tcp4", net.JoinHostPort(ip, strconv.Itoa(int(port))))
				if err != nil {
					return err
				}
				out = append(out, l)
			}
			return nil
		})
		if err != nil {
			for _, l := range out {
				_ = l.Close()
			}
			return nil, err
		}
		return out, nil
	}
}

// listenAddrs runs inside the node's namespace.
func listenAddrs(cidrs []netip.Prefix) ([]string, error) {
	if len(cidrs) == 0 {
		return []string{"0.0.0.0"}, nil
	}
	ifAddrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("interface addresses: %w", err)
	}
	var out []string
	for _, ia := range ifAddrs {
		p, err := netip.ParsePrefix(ia.String())
		if err != nil || !p.Addr().Is4() {
			continue
		}
		for _, c := range cidrs {
			if c.Contains(p.Addr()) {
				out = append(out, p.Addr().String())
				break
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no node address inside --nodeport-addresses %v", cidrs)
	}
	return out, nil
}

// programmed reads the counts /metrics reports.
func (a *Agent) programmed() metrics.Programmed {
	c := a.rec.Counts()
	return metrics.Programmed{Services: a.table.Len(), Frontends: c.Frontends, Backends: c.Backends, Pending: a.table.Dirty()}
}

// received records a Kubernetes update before it is applied.
func (o *ops) received(u k8s.Update) {
	o.proxy.QueuedUpdate()
	if u.Full {
		clear(o.checks)
	}
	for _, name := range u.Deleted {
		delete(o.checks, health.Name{Namespace: name.Namespace, Name: name.Name})
	}
	for name, hc := range u.HealthChecks {
		n := health.Name{Namespace: name.Namespace, Name: name.Name}
		if hc.NodePort == 0 {
			delete(o.checks, n)
			continue
		}
		o.checks[n] = health.Check{Port: hc.NodePort, LocalEndpoints: hc.LocalEndpoints}
	}
	if room := maxPendingTriggers - len(o.triggers); room < len(u.TriggerTimes) {
		o.log.Warn("dropping programming-latency samples: too many changes wait for a successful sync", "dropped", len(u.TriggerTimes)-max(room, 0))
		u.TriggerTimes = u.TriggerTimes[:max(room, 0)]
	}
	o.triggers = append(o.triggers, u.TriggerTimes...)
}

// synced records one sync of the maps; after a successful one everything
// received is being served.
func (o *ops) synced(full bool, took time.Duration, err error) {
	mode := metrics.SyncPartial
	if full {
		mode = metrics.SyncFull
	}
	o.metrics.ObserveSync(mode, took, err != nil)
	o.reportFailures(err)
	if err != nil {
		return
	}
	o.proxy.Updated()
	o.metrics.ObserveProgrammed(o.triggers, time.Now())
	o.triggers = o.triggers[:0]
	// Open, close and update the health-check servers only now, as
	// kube-proxy does after its rules are written: a node answers 200 for
	// endpoints its datapath serves.
	_ = o.services.Sync(o.checks) // failures are logged and retried next sync
}

func (o *ops) close() { o.services.Close() }

// reportFailures tells each Service whose frontends a sync could not
// write (a full map) why, in one message per Service so a retry failing
// the same way is not reported again; and clears the Services that failed
// before and are programmed now.
func (o *ops) reportFailures(err error) {
	if o.report == nil {
		return
	}
	msgs := map[loadbalancer.ServiceName][]string{}
	for _, fe := range frontendErrors(err) {
		if fe.Service != (loadbalancer.ServiceName{}) {
			msgs[fe.Service] = append(msgs[fe.Service], fe.Error())
		}
	}
	for name := range o.failed {
		if _, still := msgs[name]; !still {
			o.report(name, nil)
			delete(o.failed, name)
		}
	}
	for name, m := range msgs {
		slices.Sort(m)
		o.report(name, errors.New(strings.Join(m, "; ")))
		o.failed[name] = true
	}
}

// frontendErrors finds the FrontendErrors of a Sync's error: one per
// failed frontend, joined.
func frontendErrors(err error) []*loadbalancer.FrontendError {
	if fe, ok := err.(*loadbalancer.FrontendError); ok {
		return []*loadbalancer.FrontendError{fe}
	}
	var out []*loadbalancer.FrontendError
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			out = append(out, frontendErrors(e)...)
		}
	}
	return out
}
