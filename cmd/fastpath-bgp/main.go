// Command fastpath-bgp is the per-node BGP speaker (internal/bgp), run next
// to fastpath-agent on every node as MetalLB's speaker is. It is its own
// process so the agent does not link GoBGP (its gRPC, protobuf and viper
// doubled the agent binary and its resident pages). It reads Services,
// EndpointSlices, this Node and the FastpathBGPPeeringPolicies itself and
// advertises the LoadBalancer IPs this node may announce.
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

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/fastpath-net/fastpath/internal/bgp"
	"github.com/fastpath-net/fastpath/internal/k8s"
)

// version names the build in the first log line; release builds set it
// with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// config is what the command line says.
type config struct {
	kubeconfig, nodeName, netns, secretNamespace string
	port                                         int
	level                                        slog.Level
}

func run(args []string, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "fastpath-bgp: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.level}))
	klog.SetSlogLogger(log)
	log.Info("fastpath-bgp starting", "version", version, "node", cfg.nodeName)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := speak(ctx, cfg, log); err != nil {
		log.Error("fastpath-bgp failed", "error", err)
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("fastpath-bgp", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.kubeconfig, "kubeconfig", "", "kubeconfig file of the cluster; empty: the pod's in-cluster configuration")
	fs.StringVar(&cfg.nodeName, "node-name", "", "this node's Node name (default: the host name, lower-cased, as kube-proxy)")
	fs.StringVar(&cfg.netns, "netns", "", "network namespace (path or name under /run/netns) the speaker listens in; empty: its own")
	fs.IntVar(&cfg.port, "bgp-listen-port", bgp.DefaultListenPort, "TCP port the speaker listens on in --netns; the routers open the sessions")
	fs.StringVar(&cfg.secretNamespace, "bgp-secret-namespace", "kube-system", "namespace of the Secrets holding BGP peers' TCP MD5 passwords")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err := cfg.level.UnmarshalText([]byte(*logLevel)); err != nil {
		return cfg, fmt.Errorf("--log-level %q: %w", *logLevel, err)
	}
	switch {
	case cfg.port < 1 || cfg.port > 65535:
		return cfg, fmt.Errorf("--bgp-listen-port=%d: must be 1..65535", cfg.port)
	case cfg.secretNamespace == "":
		return cfg, errors.New("--bgp-secret-namespace: must not be empty")
	case cfg.kubeconfig == "" && !k8s.InCluster():
		return cfg, errors.New("--kubeconfig: give the cluster's kubeconfig (or run in a pod)")
	}
	if cfg.netns != "" {
		if !strings.Contains(cfg.netns, "/") {
			cfg.netns = "/run/netns/" + cfg.netns
		}
		if _, err := os.Stat(cfg.netns); err != nil {
			return cfg, fmt.Errorf("--netns: %w", err)
		}
	}
	if cfg.nodeName == "" {
		name, err := k8s.DefaultNodeName()
		if err != nil {
			return cfg, fmt.Errorf("--node-name not given and the host name is unknown: %w", err)
		}
		cfg.nodeName = name
	}
	return cfg, nil
}

// speak runs the controller, fed by a Service source of its own, until
// ctx ends. It then returns with the sessions up: the process's exit
// closes them without a NOTIFICATION, so routers doing graceful restart
// keep this node's routes until the next speaker re-advertises them.
func speak(ctx context.Context, cfg config, log *slog.Logger) error {
	client, err := k8s.NewClient(cfg.kubeconfig)
	if err != nil {
		return fmt.Errorf("--kubeconfig: %w", err)
	}
	dyn, err := k8s.NewDynamicClient(cfg.kubeconfig)
	if err != nil {
		return fmt.Errorf("--kubeconfig: %w", err)
	}
	src, err := newSource(client, cfg.nodeName, log)
	if err != nil {
		return err
	}
	c := bgp.New(bgp.Config{
		Client: client, Dynamic: dyn, NodeName: cfg.nodeName, NetNS: cfg.netns,
		ListenPort: cfg.port, SecretNamespace: cfg.secretNamespace,
		Log: log.With("component", "bgp"),
	})
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Run(ctx)
	}()
	err = src.Run(ctx, func(u k8s.Update) { c.Update(u.Full, u.Upserted, u.Deleted) })
	cancel()
	<-done
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("kubernetes source: %w", err)
	}
	return nil
}

// newSource is the agent's Kubernetes Service source (internal/k8s), so
// the speaker picks the same announceable LoadBalancer frontends as the
// datapath serves (ready backends; for externalTrafficPolicy Local, this
// node's). Its Events about Services that cannot be programmed are the
// agent's to send: here they are dropped (no events RBAC), the log keeps
// them.
func newSource(client kubernetes.Interface, node string, log *slog.Logger) (*k8s.Watcher, error) {
	return k8s.New(k8s.Config{Client: client, NodeName: node, Log: log.With("source", "kubernetes"), Recorder: noEvents{}})
}

// noEvents is an EventRecorder that sends nothing.
type noEvents struct{}

func (noEvents) Event(runtime.Object, string, string, string)                                      {}
func (noEvents) Eventf(runtime.Object, string, string, string, ...any)                             {}
func (noEvents) AnnotatedEventf(runtime.Object, map[string]string, string, string, string, ...any) {}
