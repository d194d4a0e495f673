// Command fastpath-agent runs fastpath on one node: it loads and attaches
// the eBPF datapath and keeps its maps equal to the desired services.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/fastpath-net/fastpath/internal/agent"
	"github.com/fastpath-net/fastpath/internal/datapath"
	"github.com/fastpath-net/fastpath/internal/k8s"
	"github.com/fastpath-net/fastpath/internal/preflight"
	"github.com/fastpath-net/fastpath/internal/routing"
)

// version names the build in the agent's first log line; release builds
// set it with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	cfg, level, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "fastpath-agent: %v\n", err)
		return 2
	}
	// Refuse to start, in one line, on a node that lacks what the
	// datapath needs, before anything is loaded or pinned.
	if err := preflight.Check(preflight.Needs{PinDir: cfg.PinDir, Cgroup: cfg.Cgroup}); err != nil {
		fmt.Fprintf(stderr, "fastpath-agent: cannot start: %v\n", err)
		return 1
	}
	cfg.Log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	// client-go logs through klog (an unreachable apiserver, for one):
	// into the agent's log, in its format.
	klog.SetSlogLogger(cfg.Log)
	cfg.Log.Info("fastpath-agent starting", "version", version)
	agent.Version = version
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := agent.Run(ctx, cfg); err != nil {
		cfg.Log.Error("agent failed", "error", err)
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (agent.Config, slog.Level, error) {
	var cfg agent.Config
	fs := flag.NewFlagSet("fastpath-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.PinDir, "bpffs-dir", datapath.DefaultPinDir, "bpffs directory where maps and links are pinned")
	fs.StringVar(&cfg.NetNS, "netns", "", "network namespace (path or name under /run/netns) whose interfaces get the datapath; empty: the agent's own")
	ifaces := fs.String("interfaces", "", "comma-separated interfaces whose ingress gets the per-packet load balancer")
	network := addNetworkFlags(fs)
	cni := addCNIFlags(fs)
	l2 := addL2Flags(fs)
	bgpf := addBGPFlags(fs)
	fs.StringVar(&cfg.Cgroup, "cgroup", "", "cgroup v2 directory whose processes get socket load balancing; empty: off")
	fs.StringVar(&cfg.ServicesFile, "services-file", "", "YAML/JSON file of services (standalone mode); re-read when it changes")
	fs.DurationVar(&cfg.PollInterval, "services-file-poll", time.Second, "how often the services file is checked for changes")
	kube := addKubeFlags(fs)
	routingMode := fs.String("routing-mode", "", "pod traffic to other nodes: native (routes via the nodes' InternalIPs) or vxlan "+
		"(tunnel over the first --external-interfaces); empty: off. Needs the Kubernetes source")
	fs.DurationVar(&cfg.GCInterval, "ct-gc-interval", 30*time.Second, "how often expired conntrack entries are removed")
	fs.DurationVar(&cfg.NodeProbeInterval, "node-probe-interval", 10*time.Second, "how often the other nodes' agents are probed "+
		"(/livez on the --healthz-addr port of each Node's InternalIP; fastpathctl status and fastpath_node_reachable show the answers); 0: never")
	fs.DurationVar(&cfg.ResyncPeriod, "resync-period", 5*time.Minute, "how often maps are compared with the desired state and repaired")
	tc := fs.String("tc-mode", "auto", "how TC programs attach: auto (TCX, else clsact), tcx or clsact")
	fs.IntVar(&cfg.Sizes.CT, "ct-max", 0, "conntrack map entries (two per connection; also the NAT table of masqueraded flows); "+
		"0: derived from the node's RAM with --ct-memory-ratio, and an existing pinned map keeps its size")
	fs.Float64Var(&cfg.CTMemoryRatio, "ct-memory-ratio", datapath.DefaultCTMemoryRatio, "share of the node's RAM the conntrack map may take when --ct-max is 0 "+
		"(bounded to 2^17..2^24 entries)")
	fs.IntVar(&cfg.Sizes.Services, "services-max", datapath.DefaultSizes.Services, "service map entries (one per frontend plus one per backend slot)")
	fs.IntVar(&cfg.Sizes.Backends, "backends-max", datapath.DefaultSizes.Backends, "backend map entries")
	fs.IntVar(&cfg.Sizes.RevNat, "revnat-max", datapath.DefaultSizes.RevNat, "reverse-NAT map entries (one per frontend)")
	fs.IntVar(&cfg.Sizes.SockRevNat, "sock-revnat-max", datapath.DefaultSizes.SockRevNat, "socket reverse-NAT map entries")
	fs.IntVar(&cfg.Sizes.Affinity, "affinity-max", datapath.DefaultSizes.Affinity, "session-affinity map entries (one per client and ClientIP-affinity frontend; LRU)")
	fs.IntVar(&cfg.Sizes.SourceRanges, "source-ranges-max", datapath.DefaultSizes.SourceRanges, "loadBalancerSourceRanges map entries (one per range and LoadBalancer frontend)")
	fs.BoolVar(&cfg.Policy, "enable-policy", false, "enforce NetworkPolicy on pod veths (needs the Kubernetes source and the FastpathIdentity CRD, "+
		"deploy/crds/fastpathidentities.yaml); off: pods are open")
	l7 := fs.Bool("enable-l7-proxy", false, "run the L7 (HTTP) policy proxy for FastpathNetworkPolicy HTTP rules (needs --enable-policy); "+
		"off: flows that policy sends to the proxy are dropped")
	l7Port := fs.Uint("l7-proxy-port", agent.DefaultL7ProxyPort, "port of the L7 proxy's transparent listener in the node's namespace")
	l7Handover := fs.String("l7-handover-socket", agent.DefaultL7HandoverSocket, "unix socket where the running agent hands the L7 proxy's "+
		"listener to the next one (upgrade: new connections wait in its backlog instead of being dropped); one per node; empty: no hand-over")
	layout := fs.String("map-layout-mismatch", "refuse", "what to do with pinned maps of another layout or size (an upgrade that changed them, "+
		"or a changed *-max): refuse (exit; the pinned datapath keeps serving) or recreate (create them anew, keep the compatible ones "+
		"such as fp_ct, and attach the new programs only once the new maps are programmed); maps whose new layout only appends "+
		"fields (fp_ct from layout v5) are carried over with their entries either way")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	addOpsFlags(fs, &cfg.Ops)
	addMonitorFlags(fs, &cfg.Monitor)
	configDir := fs.String("config-dir", "", "directory with one file per flag, named after it (a mounted ConfigMap); flags on the command line win")
	if err := fs.Parse(args); err != nil {
		return cfg, 0, err
	}
	if err := applyConfigDir(fs, *configDir); err != nil {
		return cfg, 0, err
	}
	if fs.NArg() > 0 {
		return cfg, 0, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	var err error
	if cfg.Kubernetes, err = kube.source(cfg.ServicesFile, k8s.InCluster()); err != nil {
		return cfg, 0, err
	}
	if cfg.TC, err = datapath.ParseTCMode(*tc); err != nil {
		return cfg, 0, fmt.Errorf("--tc-mode: %w", err)
	}
	if *ifaces != "" {
		cfg.Interfaces = strings.Split(*ifaces, ",")
	}
	if cfg.Network, err = network.network(cfg.Interfaces); err != nil {
		return cfg, 0, err
	}
	if cfg.CNI, err = cni.cni(cfg.Kubernetes != nil); err != nil {
		return cfg, 0, err
	}
	if cfg.L2, err = l2.l2(cfg.Kubernetes); err != nil {
		return cfg, 0, err
	}
	if err := checkBGP(bgpf); err != nil {
		return cfg, 0, err
	}
	if *routingMode != "" {
		mode, err := routing.ParseMode(*routingMode)
		if err != nil {
			return cfg, 0, fmt.Errorf("--routing-mode: %w", err)
		}
		cfg.Routing = &agent.Routing{Mode: mode}
		switch {
		case cfg.Kubernetes == nil:
			return cfg, 0, fmt.Errorf("--routing-mode learns the other nodes from Kubernetes: give --kubeconfig")
		case len(cfg.Network.ExternalInterfaces) == 0:
			return cfg, 0, fmt.Errorf("--routing-mode: give the node's uplink in --external-interfaces")
		}
	}
	if *l7 {
		if *l7Port == 0 || *l7Port > 65535 {
			return cfg, 0, fmt.Errorf("--l7-proxy-port %d: want 1-65535", *l7Port)
		}
		cfg.L7Proxy = &agent.L7Proxy{Port: uint16(*l7Port), HandoverSocket: *l7Handover}
	}
	if cfg.NetNS != "" && !strings.Contains(cfg.NetNS, "/") {
		cfg.NetNS = "/run/netns/" + cfg.NetNS
	}
	switch *layout {
	case "refuse":
	case "recreate":
		cfg.RecreateIncompatibleMaps = true
	default:
		return cfg, 0, fmt.Errorf("--map-layout-mismatch=%q: want refuse or recreate", *layout)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return cfg, 0, fmt.Errorf("--log-level %q: %w", *logLevel, err)
	}
	return cfg, level, validate(cfg)
}

func validate(cfg agent.Config) error {
	if cfg.ServicesFile == "" && cfg.Kubernetes == nil {
		return agent.ErrNoSource
	}
	if cfg.Policy && cfg.Kubernetes == nil {
		return fmt.Errorf("--enable-policy reads Pods, Namespaces and NetworkPolicies from Kubernetes: give --kubeconfig")
	}
	if cfg.Sizes.CT < 0 {
		return fmt.Errorf("--ct-max=%d: want 0 (derived from memory) or a number of entries", cfg.Sizes.CT)
	}
	if cfg.CTMemoryRatio <= 0 || cfg.CTMemoryRatio > 0.25 {
		return fmt.Errorf("--ct-memory-ratio=%v: want a share of RAM in (0, 0.25]", cfg.CTMemoryRatio)
	}
	if cfg.L7Proxy != nil && !cfg.Policy {
		return fmt.Errorf("--enable-l7-proxy applies the HTTP rules of policies: give --enable-policy")
	}
	for name, v := range map[string]int{
		"--services-max": cfg.Sizes.Services, "--backends-max": cfg.Sizes.Backends,
		"--revnat-max": cfg.Sizes.RevNat, "--sock-revnat-max": cfg.Sizes.SockRevNat,
		"--affinity-max": cfg.Sizes.Affinity, "--source-ranges-max": cfg.Sizes.SourceRanges,
	} {
		if v < 1 {
			return fmt.Errorf("%s=%d: must be at least 1", name, v)
		}
	}
	if cfg.NodeProbeInterval < 0 {
		return fmt.Errorf("--node-probe-interval=%s: want 0 (off) or a positive duration", cfg.NodeProbeInterval)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"--services-file-poll", cfg.PollInterval}, {"--ct-gc-interval", cfg.GCInterval}, {"--resync-period", cfg.ResyncPeriod},
		{"--healthz-timeout", cfg.Ops.HealthTimeout}} {
		if d.v <= 0 {
			return fmt.Errorf("%s=%s: must be positive", d.name, d.v)
		}
	}
	return nil
}
