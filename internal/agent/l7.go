package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/fastpath-net/fastpath/internal/datapath"
	"github.com/fastpath-net/fastpath/internal/flows"
	"github.com/fastpath-net/fastpath/internal/fpnetpol"
	"github.com/fastpath-net/fastpath/internal/identity"
	"github.com/fastpath-net/fastpath/internal/l7handover"
	"github.com/fastpath-net/fastpath/internal/l7policy"
	"github.com/fastpath-net/fastpath/internal/l7proxy"
	"github.com/fastpath-net/fastpath/internal/l7redirect"
	"github.com/fastpath-net/fastpath/internal/policy"
)

// L7Proxy runs the L7 (HTTP) policy proxy of this node (docs/l7.md).
type L7Proxy struct {
	Port uint16 // the transparent listener's port in --netns
	// HandoverSocket is the unix socket where the running agent offers its
	// listener to the next one (l7handover); "" = no hand-over.
	HandoverSocket string
}

// DefaultL7ProxyPort is --l7-proxy-port's default.
const DefaultL7ProxyPort = 15001

// DefaultL7HandoverSocket is --l7-handover-socket's default, in the
// directory the DaemonSet shares with the host (/run/fastpath).
const DefaultL7HandoverSocket = "/run/fastpath/l7-proxy.sock"

// l7Shutdown bounds how long a stopping agent lets requests in flight
// finish.
const l7Shutdown = 5 * time.Second

// l7TakeRetry is how often an agent that found the port taken asks the
// running agent for its listener again (it may not offer it yet, or be
// draining and about to close it).
const l7TakeRetry = 50 * time.Millisecond

// l7SuccessorWait bounds how long a stopping agent serves on for a next
// agent that waits for its rules before taking the listener; with the
// drain (l7Shutdown) it stays within the DaemonSet's
// terminationGracePeriodSeconds.
const l7SuccessorWait = 10 * time.Second

// startL7 installs the redirect route, gets the transparent listener and
// serves the proxy on it once the policy maps are programmed, until ctx
// ends; the returned func waits for requests in flight to finish.
//
// The listener never closes across an upgrade: when another agent still
// holds the port, this one lets it serve until its own rules are in the
// L7 table, then takes its listening socket (l7handover) and the other
// stops accepting and drains. Connections that arrive in between wait in
// the socket's backlog. Without a running agent (first start, crash) the
// listener is opened at once, before the rules are there, and accepted
// only after: connections wait in the backlog unread instead of being
// judged by an empty table (clients whose SYNs came while no process held
// the port retransmit them: the datapath drops them, fail closed).
func (a *Agent) startL7(ctx context.Context) (wait func(), err error) {
	cfg := a.cfg.L7Proxy
	log := a.log.With("component", "l7proxy")
	if err := l7redirect.EnsureRoute(a.cfg.NetNS); err != nil {
		return nil, err
	}
	ln, err := a.listenL7()
	inherit := errors.Is(err, syscall.EADDRINUSE) && cfg.HandoverSocket != ""
	if err != nil && !inherit {
		return nil, err
	}
	if inherit {
		log.Info("l7 proxy port in use: the running agent serves until this one's rules are programmed, then hands its listener over",
			"port", cfg.Port, "socket", cfg.HandoverSocket)
	}
	if err := a.attachL7Ingress(); err != nil {
		if ln != nil {
			ln.Close()
		}
		return nil, err
	}
	p := a.newL7Proxy(log)
	done := make(chan struct{})
	go func() {
		defer close(done)
		ln, err := a.l7Listener(ctx, ln, log)
		if err != nil {
			if ctx.Err() == nil {
				log.Error("no l7 proxy listener; flows with HTTP rules are dropped until an agent listens", "error", err)
			}
			return
		}
		a.serveL7(ctx, p, ln, log)
	}()
	return func() { <-done }, nil
}

// l7Listener returns, once the policy maps' first state is programmed,
// ln or, when ln is nil (another agent holds the port), that agent's
// listener.
func (a *Agent) l7Listener(ctx context.Context, ln *net.TCPListener, log *slog.Logger) (*net.TCPListener, error) {
	from := "new listener"
	if ln == nil {
		var err error
		if ln, from, err = a.inheritL7Listener(ctx, log); err != nil {
			return nil, err
		}
	}
	select {
	case <-a.policy.programmed:
	case <-ctx.Done():
		ln.Close()
		return nil, ctx.Err()
	}
	log.Info("l7 proxy listening", "port", a.cfg.L7Proxy.Port, "netns", a.cfg.NetNS, "from", from)
	return ln, nil
}

// inheritL7Listener takes the running agent's listener once the policy
// maps are programmed (it serves until then), or opens one when that agent
// stopped offering it and the port is free again.
func (a *Agent) inheritL7Listener(ctx context.Context, log *slog.Logger) (*net.TCPListener, string, error) {
	cookie, err := l7handover.NetNSCookie(a.cfg.NetNS)
	if err != nil {
		return nil, "", err
	}
	tick := time.NewTicker(l7TakeRetry)
	defer tick.Stop()
	for warn := time.Now(); ; {
		ln, err := l7handover.Take(ctx, a.cfg.L7Proxy.HandoverSocket, a.cfg.L7Proxy.Port, cookie, a.policy.programmed)
		if err == nil {
			return ln, "previous agent", nil
		}
		if ctx.Err() != nil {
			return nil, "", fmt.Errorf("%w (last: %w)", ctx.Err(), err)
		}
		// The holder stopped offering (stopping, or crashed) or failed
		// the exchange: the port may be free again.
		l, lerr := a.listenL7()
		if lerr == nil {
			return l, "new listener", nil
		}
		last := fmt.Errorf("%w; %w", err, lerr)
		if time.Now().After(warn) {
			log.Warn("l7 proxy: cannot get the listener yet; retrying", "error", last)
			warn = time.Now().Add(2 * l7Shutdown)
		}
		select {
		case <-ctx.Done():
			return nil, "", fmt.Errorf("%w (last: %w)", ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// MsgL7SuccessorWaiting is logged when the next agent connects for the
// listener (tests wait for it).
const MsgL7SuccessorWaiting = "l7 proxy: the next agent waits for its rules, then takes the listener"

// serveL7 serves p on ln and offers ln to the next agent until the next
// agent took it or ctx ends; then p drains. Stopping while a next agent
// waits for its rules, it serves on until that agent takes the listener
// (at most l7SuccessorWait): closing it would reset the connections in
// its backlog and drop new SYNs until the next agent listens.
func (a *Agent) serveL7(ctx context.Context, p *l7proxy.Proxy, ln *net.TCPListener, log *slog.Logger) {
	go func() {
		if err := p.Serve(ln); err != nil && !errors.Is(err, l7proxy.ErrClosed) {
			log.Error("l7 proxy stopped; flows with HTTP rules are dropped until the agent restarts", "error", err)
		}
	}()
	var offer *l7handover.Offer
	var handedOver <-chan struct{} // nil: never
	if path := a.cfg.L7Proxy.HandoverSocket; path != "" {
		o, err := l7handover.NewOffer(path, ln)
		if err != nil {
			log.Error("l7 proxy: cannot offer the listener to the next agent; an upgrade will cost new connections a SYN retransmission", "error", err)
		} else {
			offer, handedOver = o, o.Done()
			o.OnSuccessor = func() { log.Info(MsgL7SuccessorWaiting) }
			go func() {
				if err := o.Serve(); err != nil {
					log.Error("l7 proxy: offering the listener to the next agent stopped", "error", err)
				}
			}()
		}
	}
	select {
	case <-handedOver:
	case <-ctx.Done():
		if offer != nil && offer.Waiting() {
			log.Info("l7 proxy: the next agent waits for the listener; serving until it takes it", "at most", l7SuccessorWait)
			select {
			case <-handedOver:
			case <-time.After(l7SuccessorWait):
				log.Warn("l7 proxy: the next agent did not take the listener in time; closing it")
			}
		}
	}
	select {
	case <-handedOver:
		log.Info("l7 proxy: listener handed over to the next agent; draining")
	default:
	}
	if offer != nil {
		offer.Close()
	}
	sctx, cancel := context.WithTimeout(context.Background(), l7Shutdown)
	defer cancel()
	if err := p.Shutdown(sctx); err != nil {
		log.Warn("l7 proxy: requests still in flight at the shutdown deadline were cut", "error", err)
	}
	// Only this process's descriptor: the listener lives on when the next
	// agent holds it.
	ln.Close()
}

func (a *Agent) listenL7() (*net.TCPListener, error) {
	ln, err := l7redirect.Listen(a.cfg.NetNS, a.cfg.L7Proxy.Port)
	if err != nil {
		return nil, err
	}
	tl, ok := ln.(*net.TCPListener)
	if !ok { // l7redirect.Listen opens "tcp4": cannot happen
		ln.Close()
		return nil, fmt.Errorf("l7 proxy listener: a %T, want a TCP listener", ln)
	}
	return tl, nil
}

func (a *Agent) newL7Proxy(log *slog.Logger) *l7proxy.Proxy {
	pc := a.policy
	node := pc.node
	// A Service flow reaches the proxy with its frontend as destination:
	// the proxy judges and dials the backend tc_lb chose (fp_ct).
	backend := func(f l7proxy.Flow) (netip.AddrPort, bool) { return l7redirect.Backend(a.dp.CT, f.Src, f.Dst) }
	pc.mu.Lock()
	pc.l7.Backend = backend
	pc.mu.Unlock()
	return l7proxy.New(l7proxy.Config{
		Policy: pc.l7,
		Dial: func(ctx context.Context, f l7proxy.Flow) (net.Conn, error) {
			dst := f.Dst
			if b, ok := backend(f); ok {
				dst = b
			}
			return l7redirect.Dial(ctx, a.cfg.NetNS, dst.String())
		},
		Events: func(ev l7proxy.Event) { a.publishL7(pc.l7.FlowEvent(node, ev)) },
		Logf:   func(format string, args ...any) { log.Error(fmt.Sprintf(format, args...)) },
	})
}

// attachL7Ingress puts tc_policy after tc_lb at the ingress of the node's
// own interfaces (uplinks, fp_vxlan): a remote client's flow to a local pod
// whose ingress has HTTP rules must be taken to the proxy where it enters
// the node, the only place bpf_sk_assign works.
func (a *Agent) attachL7Ingress() error {
	names := append(append([]string{}, a.cfg.Interfaces...), a.cfg.Network.ExternalInterfaces...)
	for _, name := range names {
		ifc := datapath.Iface{NetNS: a.cfg.NetNS, Name: name}
		mode, err := a.dp.TCAttachment(ifc)
		if err != nil {
			return fmt.Errorf("l7 proxy: tc_lb's attachment on %s: %w", ifc, err)
		}
		if err := a.dp.AttachPolicyIngress(ifc, mode); err != nil {
			return fmt.Errorf("l7 proxy: %w", err)
		}
	}
	return nil
}

// publishL7 sends the proxy's access log to the monitor's event hub
// (`fastpathctl monitor --type l7`, the flow map).
func (a *Agent) publishL7(ev flows.Event) {
	a.ops.metrics.ObserveL7Request(string(ev.Verdict), ev.Direction)
	if a.flows == nil {
		a.log.Info("l7", "summary", ev.Summary, "src", ev.Source.Workload(), "dst", ev.Destination.Workload())
		return
	}
	if ev.Node == "" && a.cfg.Kubernetes != nil {
		ev.Node = a.cfg.Kubernetes.NodeName
	}
	// The identities' labels put both ends with their workloads on the
	// flow map, as the datapath's records are.
	names := agentNames{a}
	for _, e := range []*flows.Endpoint{&ev.Source, &ev.Destination} {
		if e.Identity != 0 && e.Labels == nil {
			ns, labels, _ := names.Identity(identity.ID(e.Identity))
			e.Labels = labels
			if e.Namespace == "" {
				e.Namespace = ns
			}
		}
	}
	a.flows.hub.Publish(ev)
}

// watchFastpathPolicies feeds FastpathNetworkPolicy and
// FastpathClusterwideNetworkPolicy objects to the Engine when the cluster
// serves the CRDs (deploy/crds); without them only NetworkPolicies count.
// It returns the informers' sync functions.
func (c *policyCtl) watchFastpathPolicies(ctx context.Context, client kubernetes.Interface, dynF dynamicinformer.DynamicSharedInformerFactory) []cache.InformerSynced {
	served := map[string]bool{}
	if rl, err := client.Discovery().ServerResourcesForGroupVersion(fpnetpol.PolicyGVR.GroupVersion().String()); err == nil {
		for _, r := range rl.APIResources {
			served[r.Name] = true
		}
	}
	var synced []cache.InformerSynced
	for _, gvr := range []struct {
		res, kind string
	}{{fpnetpol.PolicyGVR.Resource, "FastpathNetworkPolicy"}, {fpnetpol.ClusterwidePolicyGVR.Resource, "FastpathClusterwideNetworkPolicy"}} {
		if !served[gvr.res] {
			c.log.Info("policy: CRD not served; its policies are ignored", "kind", gvr.kind)
			continue
		}
		g := fpnetpol.PolicyGVR
		g.Resource = gvr.res
		reg, err := dynF.ForResource(g).Informer().AddEventHandler(handlers(c, c.onFastpathPolicy, func(u *unstructured.Unstructured) {
			c.engine.DeleteFastpathPolicy(u.GetNamespace(), u.GetName())
		}))
		if err != nil {
			c.log.Error("policy: informer handler", "kind", gvr.kind, "error", err)
			continue
		}
		synced = append(synced, reg.HasSynced)
	}
	return synced
}

// onFastpathPolicy decodes one object; one that does not decode (the CRD's
// schema makes this rare) is enforced as allowing nothing for what it
// selects, like a NetworkPolicy the Engine cannot read.
func (c *policyCtl) onFastpathPolicy(u *unstructured.Unstructured) {
	p, err := fpnetpol.Decode(u)
	if err != nil {
		c.log.Warn("policy: cannot decode; its pods allow nothing it would", "policy", u.GetNamespace()+"/"+u.GetName(), "error", err)
		p = &fpnetpol.Policy{Namespace: u.GetNamespace(), Name: u.GetName()}
		p.Spec.Ingress, p.Spec.Egress = []fpnetpol.IngressRule{}, []fpnetpol.EgressRule{}
		p.Spec.EndpointSelector.MatchLabels = map[string]string{"fastpath.io/undecodable": "true"}
	}
	c.engine.UpsertFastpathPolicy(p)
}

// problemObject names the object a Problem belongs to for its Event.
func problemObject(p policy.Problem) (kind, apiVersion, ns, name string) {
	switch {
	case strings.HasPrefix(p.Policy, "fnp:"):
		ns, name, _ = strings.Cut(strings.TrimPrefix(p.Policy, "fnp:"), "/")
		return "FastpathNetworkPolicy", "fastpath.io/v1alpha1", ns, name
	case strings.HasPrefix(p.Policy, "fcnp:"):
		return "FastpathClusterwideNetworkPolicy", "fastpath.io/v1alpha1", "", strings.TrimPrefix(p.Policy, "fcnp:")
	}
	ns, name, _ = strings.Cut(p.Policy, "/")
	return "NetworkPolicy", "networking.k8s.io/v1", ns, name
}

// l7Addrs gives the L7 table an upserted pod's addresses.
func (c *policyCtl) l7Addrs(n policy.PodName) []netip.Addr {
	_, addrs, _ := c.engine.PodIdentity(n)
	return addrs
}

func (c *policyCtl) enableL7(port uint16) {
	c.l7 = l7policy.New()
	c.l7.OnError = func(pod policy.PodName, k policy.Key, err error) {
		c.log.Error("l7 policy: the proxy's matcher refuses a rule set; the entry denies every request", "pod", pod, "entry", fmt.Sprint(k), "error", err)
	}
	c.rec.Rules.ProxyPort = port
}
