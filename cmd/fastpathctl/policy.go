package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/fastpath-net/fastpath/internal/datapath/policymap"
	"github.com/fastpath-net/fastpath/internal/identity"
	"github.com/fastpath-net/fastpath/internal/k8s"
	"github.com/fastpath-net/fastpath/internal/policy"
)

// policyTrace answers `policy trace` from a snapshot of the cluster,
// computed by internal/policy, the code the agent programs the maps from.
func policyTrace(args []string, output string, w io.Writer) error {
	fs := flag.NewFlagSet("policy trace", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	from := fs.String("from", "", "source: pod (namespace/name) or IP address")
	to := fs.String("to", "", "destination: pod (namespace/name) or IP address")
	portFlag := fs.String("port", "", "destination port and protocol, e.g. 80/tcp (protocol defaults to tcp)")
	kubeconfig := fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig file (env KUBECONFIG; in a pod: its service account)")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("policy trace: %w", err)
	}
	for flagName, v := range map[string]string{"--from": *from, "--to": *to} {
		if _, err := netip.ParseAddr(v); err != nil {
			if _, err := policy.ParsePodName(v); err != nil {
				return fmt.Errorf("policy trace: %s %q: want namespace/pod or an IP address", flagName, v)
			}
		}
	}
	proto, port, err := parsePort(*portFlag)
	if err != nil {
		return fmt.Errorf("policy trace: --port %w", err)
	}
	cfg, err := k8s.RESTConfig(*kubeconfig)
	if err != nil {
		return err
	}
	cfg.UserAgent = "fastpathctl"
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	eng, err := policy.LoadCluster(ctx, cs, dyn)
	if err != nil {
		return err
	}
	v, err := eng.TraceEnds(*from, *to, proto, port)
	if err != nil {
		return err
	}
	for _, p := range eng.Problems() {
		for _, side := range []policy.Side{v.Egress, v.Ingress} {
			if side.Endpoint.Namespace != "" && strings.HasPrefix(p.Policy, side.Endpoint.Namespace+"/") {
				v.Problems = append(v.Problems, p.String())
				break
			}
		}
	}
	if output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	_, err = io.WriteString(w, v.String())
	return err
}

func parsePort(s string) (policy.Proto, uint16, error) {
	portS, protoS, ok := strings.Cut(s, "/")
	if !ok {
		protoS = "tcp"
	}
	proto, err := policy.ParseProto(protoS)
	if err != nil {
		return 0, 0, err
	}
	n, err := strconv.ParseUint(portS, 10, 16)
	if err != nil || n == 0 {
		return 0, 0, fmt.Errorf("%q: want PORT/PROTO with PORT in 1-65535", s)
	}
	return proto, uint16(n), nil
}

// policyMonitor streams the verdict ring pinned under dir until
// interrupted or -n records were shown.
func policyMonitor(args []string, dir, output string, w io.Writer) error {
	fs := flag.NewFlagSet("policy monitor", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	drops := fs.Bool("drops", false, "drops only")
	ep := fs.Uint("endpoint", 0, "only this endpoint id")
	id := fs.Uint("identity", 0, "only records with this source or destination identity")
	count := fs.Int("n", 0, "stop after this many records (0: until interrupted)")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("policy monitor: %w", err)
	}
	if *ep > 65535 {
		return fmt.Errorf("policy monitor: --endpoint %d: want 0-65535", *ep)
	}
	r, closeRing, err := openVerdictRing(dir)
	if err != nil {
		return fmt.Errorf("policy monitor: %w", err)
	}
	defer closeRing()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	enc := json.NewEncoder(w)
	f := policymap.Filter{Endpoint: uint16(*ep), Identity: identity.ID(*id), DropsOnly: *drops}
	return policymap.Stream(ctx, r, f, *count, func(v policymap.Verdict) error {
		if output == "json" {
			return enc.Encode(v)
		}
		_, err := fmt.Fprintln(w, v)
		return err
	})
}

// openVerdictRing opens a reader of the verdict ring pinned under dir.
// Not read-only: a ring reader advances the consumer position, so records
// read here are consumed (one reader at a time sees them).
// closeRing releases the reader and then the map.
func openVerdictRing(dir string) (r *ringbuf.Reader, closeRing func(), err error) {
	path := filepath.Join(dir, "maps", policymap.VerdictsMap)
	m, err := ebpf.LoadPinnedMap(path, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("no verdict ring at %s (is the datapath loaded?): %w", path, err)
	}
	if r, err = ringbuf.NewReader(m); err != nil {
		m.Close()
		return nil, nil, err
	}
	return r, func() { r.Close(); m.Close() }, nil
}
