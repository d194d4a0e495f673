package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/fastpath-net/fastpath/internal/agent"
	"github.com/fastpath-net/fastpath/internal/ctl"
	"github.com/fastpath-net/fastpath/internal/datapath/policymap"
	"github.com/fastpath-net/fastpath/internal/endpoint"
	"github.com/fastpath-net/fastpath/internal/flows"
	"github.com/fastpath-net/fastpath/internal/identity"
	"github.com/fastpath-net/fastpath/internal/policy"
)

// monitor streams the agent's flow events (its /v1/flows), filtered by
// the agent. With no agent listening it reads the pinned ring itself,
// naming what the pins and the endpoint records can name.
func monitor(args []string, dir, stateDir, output string, w, stderr io.Writer) error {
	fs := flag.NewFlagSet("monitor", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	types := fs.String("type", "", "event types, comma-separated: drop, allow, policy, l7")
	ns := fs.String("namespace", "", "only events with an end in this namespace")
	pod := fs.String("pod", "", "only events with this pod (namespace/name or name) at an end")
	id := fs.Uint("identity", 0, "only events with this identity at an end")
	port := fs.Uint("port", 0, "only events with this port at an end")
	reason := fs.String("reason", "", "only this reason code ("+strings.Join(policymap.ReasonCodes(), ", ")+")")
	count := fs.Int("n", 0, "stop after this many events (0: until interrupted)")
	fs.StringVar(&output, "o", output, "output: text or json")
	addr := fs.String("agent", envOr("FASTPATH_MONITOR_ADDR", agent.DefaultMonitorAddr), "the agent's --monitor-addr (env FASTPATH_MONITOR_ADDR)")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("monitor: %w", err)
	}
	if output != "text" && output != "json" {
		return fmt.Errorf("monitor: -o %q: want text or json", output)
	}
	q := map[string][]string{"type": {*types}, "namespace": {*ns}, "pod": {*pod}, "reason": {*reason}}
	if *id != 0 {
		q["identity"] = []string{fmt.Sprint(*id)}
	}
	if *port != 0 {
		q["port"] = []string{fmt.Sprint(*port)}
	}
	f, err := flows.ParseFilter(q)
	if err != nil {
		return fmt.Errorf("monitor: --%w", err)
	}
	if *reason != "" && !validReason(*reason) {
		return fmt.Errorf("monitor: --reason %q: want one of %s", *reason, strings.Join(policymap.ReasonCodes(), ", "))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	print := printer(w, output, *count)
	err = streamAgent(ctx, *addr, f, print)
	if errors.Is(err, syscall.ECONNREFUSED) {
		fmt.Fprintf(stderr, "fastpathctl: no agent at %s: reading the pinned verdict ring directly (only local pods and service addresses are named)\n", *addr)
		return streamPinned(ctx, dir, stateDir, f, print)
	}
	return err
}

func validReason(r string) bool {
	for _, c := range policymap.ReasonCodes() {
		if c == r {
			return true
		}
	}
	return false
}

// errEnough ends a stream once -n events were printed.
var errEnough = errors.New("enough")

func printer(w io.Writer, output string, max int) func(flows.Event) error {
	enc := json.NewEncoder(w)
	n := 0
	return func(e flows.Event) error {
		var err error
		if output == "json" {
			err = enc.Encode(e)
		} else {
			_, err = fmt.Fprintln(w, formatEvent(e))
		}
		if err != nil {
			return err
		}
		// -n counts events; notes of what was lost are extra lines.
		if e.Type == flows.TypeLost {
			return nil
		}
		if n++; max > 0 && n >= max {
			return errEnough
		}
		return nil
	}
}

// formatEvent is one line: time, type, verdict, the flow and the sentence.
func formatEvent(e flows.Event) string {
	return fmt.Sprintf("%s %-5s %-7s %s", e.Time.Format("15:04:05.000"), strings.ToUpper(string(e.Type)), e.Verdict, e.Summary)
}

func streamAgent(ctx context.Context, addr string, f flows.Filter, fn func(flows.Event) error) error {
	url := "http://" + addr + "/v1/flows?" + f.Query().Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("monitor: agent at %s: %s: %s", addr, resp.Status, strings.TrimSpace(string(msg)))
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		var e flows.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return fmt.Errorf("monitor: agent sent %q: %w", sc.Text(), err)
		}
		if err := fn(e); err != nil {
			return done(err)
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("monitor: agent at %s: %w", addr, err)
	}
	return nil
}

func done(err error) error {
	if errors.Is(err, errEnough) {
		return nil
	}
	return err
}

// streamPinned reads the verdict ring pinned under dir. A ring has one
// consumer position: use it only when no agent reads it.
func streamPinned(ctx context.Context, dir, stateDir string, f flows.Filter, fn func(flows.Event) error) error {
	r, closeRing, err := openVerdictRing(dir)
	if err != nil {
		return fmt.Errorf("monitor: %w", err)
	}
	defer closeRing()
	names := &pinnedNames{stateDir: stateDir}
	if p, err := ctl.Open(dir); err == nil {
		defer p.Close()
		names.pins = p
	}
	err = policymap.Stream(ctx, r, policymap.Filter{}, 0, func(v policymap.Verdict) error {
		e := flows.FromVerdict(v, v.WallTime(), names)
		if !f.Match(&e) {
			return nil
		}
		return fn(e)
	})
	return done(err)
}

// pinnedNames names what is on this node without an agent: pods from the
// CNI's endpoint records, services by their frontend address.
type pinnedNames struct {
	stateDir string
	pins     *ctl.Pinned
	eps      []*endpoint.Endpoint // the records, read again after a second
	read     time.Time
}

func (n *pinnedNames) Pod(ip netip.Addr) (string, string) {
	if time.Since(n.read) > time.Second {
		n.eps, _ = endpoint.Load(endpoint.Dir(n.stateDir))
		n.read = time.Now()
	}
	for _, ep := range n.eps {
		for _, a := range ep.IPs {
			if a == ip {
				return ep.Pod.Namespace, ep.Pod.Name
			}
		}
	}
	return "", ""
}

func (n *pinnedNames) Identity(identity.ID) (string, []string, string) { return "", nil, "" }

func (n *pinnedNames) Service(revNatID uint32, _ uint8) string {
	if n.pins == nil {
		return ""
	}
	fe, ok, err := n.pins.LB.RevNat.Lookup(revNatID)
	if err != nil || !ok {
		return ""
	}
	return netip.AddrPortFrom(fe.Addr.IP(), fe.Port).String()
}

func (n *pinnedNames) Explain(string, string, policy.Direction, identity.ID, policy.Proto, uint16) string {
	return ""
}
