package main

import (
	"flag"
	"fmt"
	"net"
	"strconv"

	"github.com/fastpath-net/fastpath/internal/agent"
)

// addOpsFlags binds the operational endpoints' flags to o. Defaults are
// kube-proxy's addresses, so probes and scrape configs written for it fit.
func addOpsFlags(fs *flag.FlagSet, o *agent.Ops) {
	o.MetricsAddr, o.HealthzAddr = "127.0.0.1:10249", "0.0.0.0:10256"
	o.HealthTimeout = agent.DefaultHealthTimeout
	fs.Var((*addrFlag)(&o.MetricsAddr), "metrics-addr", "`IP:PORT` of the Prometheus /metrics endpoint, inside --netns; empty: off")
	fs.Var((*addrFlag)(&o.HealthzAddr), "healthz-addr", "`IP:PORT` of /healthz and /livez (kube-proxy's answers), inside --netns; empty: off")
	fs.Var((*addrFlag)(&o.PprofAddr), "pprof-addr", "`IP:PORT` of Go's /debug/pprof/ profiles, inside --netns; empty: off. Keep it on loopback")
	fs.DurationVar(&o.HealthTimeout, "healthz-timeout", o.HealthTimeout,
		"/healthz and the health-check node ports fail when a received change waits longer than this for the datapath")
}

func addMonitorFlags(fs *flag.FlagSet, m *agent.Monitor) {
	m.Addr, m.AllowSample, m.DropsPerSec = agent.DefaultMonitorAddr, agent.DefaultAllowSample, agent.DefaultDropsPerSec
	fs.Var((*addrFlag)(&m.Addr), "monitor-addr", "`IP:PORT` of the flow stream (/v1/flows, newline-delimited JSON, read by "+
		"`fastpathctl monitor`) and the flow map page (/flows/), inside --netns; empty: off. Flows name pods: keep it on loopback")
	fs.Var((*uint32Flag)(&m.AllowSample), "monitor-allow-sample",
		"record 1 in `N` new flows a NetworkPolicy allowed (0: none); drops are always recorded, within --monitor-drops-per-sec")
	fs.Var((*uint32Flag)(&m.DropsPerSec), "monitor-drops-per-sec",
		"drop records per second per CPU (policy and load balancer; a burst of as many); over it drops are only counted. 0: no limit")
}

// uint32Flag is a flag of a 32-bit count.
type uint32Flag uint32

func (f *uint32Flag) String() string { return strconv.FormatUint(uint64(*f), 10) }

func (f *uint32Flag) Set(s string) error {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return fmt.Errorf("want a number from 0 to 4294967295")
	}
	*f = uint32Flag(n)
	return nil
}

// addrFlag is an IP:PORT flag, or empty for off.
type addrFlag string

func (a *addrFlag) String() string { return string(*a) }

func (a *addrFlag) Set(s string) error {
	if s == "" {
		*a = ""
		return nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("want IP:PORT or empty: %w", err)
	}
	if host != "" && net.ParseIP(host) == nil {
		return fmt.Errorf("%q is not an IP address", host)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("port %q: want 0-65535", port)
	}
	*a = addrFlag(s)
	return nil
}
