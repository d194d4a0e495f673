package conformance

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fastpath-net/fastpath/internal/k8s/svctranslate"
	"github.com/fastpath-net/fastpath/internal/loadbalancer"
)

// The translation oracle is fastpath's half of the comparison that needs no
// agent: after every step it feeds the objects the apiserver holds - the
// ones kube-proxy just programmed from - to svctranslate.Translate, the
// function the agent's Kubernetes source programs from, and predicts each
// probe from the frontends it yields, the way the datapath looks them up
// (internal/k8s/svctranslate/translate.go: packets that start on this node
// try the internal scope first, packets from outside only the external one;
// a frontend without backends refuses; no frontend, the packet is routed).
// The prediction must match the case's expectation for fastpath, so every
// case compares kube-proxy's behaviour with fastpath's translation today,
// and with the running agent once FastpathSideEnabled is flipped.
//
// It says nothing about source addresses (the datapath's business) and
// predicts the set a session-affinity probe may land on, not the one.
const oracleName = "fastpath-translation"

// snapshot is what the apiserver holds after a step.
type snapshot struct {
	services []*corev1.Service
	slices   []*discoveryv1.EndpointSlice
	node     svctranslate.Node
	err      error
}

func (h *harness) snapshot(c *caseCtx) snapshot {
	var s snapshot
	for _, ns := range []string{namespace, metav1.NamespaceDefault} {
		svcs, err := h.client.CoreV1().Services(ns).List(c.ctx, metav1.ListOptions{})
		if err != nil {
			s.err = err
			return s
		}
		for i := range svcs.Items {
			s.services = append(s.services, &svcs.Items[i])
		}
		sl, err := h.client.DiscoveryV1().EndpointSlices(ns).List(c.ctx, metav1.ListOptions{})
		if err != nil {
			s.err = err
			return s
		}
		for i := range sl.Items {
			s.slices = append(s.slices, &sl.Items[i])
		}
	}
	node, err := h.client.CoreV1().Nodes().Get(c.ctx, nodeName, metav1.GetOptions{})
	if err != nil {
		s.err = err
		return s
	}
	s.node = svctranslate.NodeFromObject(nodeName, node, []netip.Prefix{netip.MustParsePrefix(nodePortCIDR)})
	return s
}

// frontends translates every Service, keyed by Service name.
func (s snapshot) frontends() map[string][]loadbalancer.FrontendSpec {
	out := map[string][]loadbalancer.FrontendSpec{}
	for _, svc := range s.services {
		res := svctranslate.Translate(svc, s.slices, s.node)
		out[svc.Namespace+"/"+svc.Name] = res.Service.Frontends
	}
	return out
}

// caseFrontends are the frontends of the case's own Services, as strings.
func (s snapshot) caseFrontends(prefix string) []string {
	var out []string
	for name, fes := range s.frontends() {
		if !strings.HasPrefix(name, namespace+"/"+prefix) {
			continue
		}
		for _, f := range fes {
			out = append(out, f.L4Addr.String())
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// predict is the oracle's outcome set for probe p to addr.
func (s snapshot) predict(p probe, addr string) observed {
	o := observed{addr: addr}
	if s.err != nil {
		o.err = s.err
		return o
	}
	dst, err := netip.ParseAddrPort(addr)
	if err != nil {
		o.err = err
		return o
	}
	proto := map[string]loadbalancer.Proto{"tcp": loadbalancer.TCP, "udp": loadbalancer.UDP, "sctp": loadbalancer.SCTP}[p.proto]
	var internal, external *loadbalancer.FrontendSpec
	for _, fes := range s.frontends() {
		for i := range fes {
			f := &fes[i]
			if f.Addr != dst.Addr() || f.Port != dst.Port() || f.Proto != proto {
				continue
			}
			if f.Scope == loadbalancer.ScopeInternal {
				internal = f
			} else {
				external = f
			}
		}
	}
	fe := external
	// The datapath finds INTERNAL only through its EXTERNAL twin.
	if p.from != "ext" && internal != nil && external != nil {
		fe = internal
	}
	switch {
	case fe == nil:
		// Not a frontend: routed as it is. A pod address reaches the pod;
		// anything else leaves by the node's default route and is lost.
		if name := hostOf(dst); name != "" {
			o.results = []string{name}
		} else {
			o.results = []string{Timeout}
		}
	case !sourceAllowed(fe, p.from):
		// Outside loadBalancerSourceRanges: dropped.
		o.results = []string{Timeout}
	case len(fe.Backends) == 0:
		o.results = []string{Refused}
	default:
		set := map[string]bool{}
		for _, b := range fe.Backends {
			name := hostOf(netip.AddrPortFrom(b.Addr, b.Port))
			if name == "" {
				name = netip.AddrPortFrom(b.Addr, b.Port).String()
			}
			set[name] = true
		}
		o.results = keys(set)
		if p.oneOf && fe.AffinityTimeout == 0 {
			o.err = fmt.Errorf("frontend %s has no session affinity", fe.L4Addr)
		}
	}
	return o
}

// sourceAllowed says whether frontend fe takes new flows from host from.
func sourceAllowed(fe *loadbalancer.FrontendSpec, from string) bool {
	if len(fe.SourceRanges) == 0 {
		return true
	}
	src := extIP
	if from != "ext" {
		src = podAddr(from)
	}
	for _, r := range fe.SourceRanges {
		if r.Contains(src) {
			return true
		}
	}
	return false
}

// hostOf names the server at ap, as the servers answer: "be1:8080".
func hostOf(ap netip.AddrPort) string {
	if ap.Addr() == advertiseAddr {
		return fmt.Sprintf("%s:%d", apiserverStandIn, ap.Port())
	}
	for _, h := range podHosts {
		if podAddr(h.name) == ap.Addr() && strings.HasPrefix(h.name, "be") {
			return fmt.Sprintf("%s:%d", h.name, ap.Port())
		}
	}
	return ""
}

// assertOracle checks the translation's predictions against the case's
// expectations for fastpath and against what kube-proxy did.
func (h *harness) assertOracle(t *testing.T, tc testCase, results []stepResult) {
	for i, st := range tc.steps {
		r := results[i]
		if st.newFrontends != nil {
			if got := r.oracleFE; !slices.Equal(got, r.wantFE) {
				t.Errorf("step %d (%s): the case's Services translate to frontends %v, want %v", i+1, st.name, got, r.wantFE)
			}
		}
		for j, p := range st.probes {
			o := r.oracle[j]
			where := fmt.Sprintf("step %d (%s) %s %s -> %s (%s)", i+1, st.name, p.proto, p.from, p.to.desc, o.addr)
			if o.err != nil {
				t.Errorf("%s: %v", where, o.err)
				continue
			}
			want := p.want
			if p.fp != nil && p.fp.want != nil {
				want = p.fp.want
				t.Logf("KNOWN DIFFERENCE (%s) %s: fastpath asserts %v: %s", p.fp.kind, where, want, p.fp.why)
			}
			if !slices.Equal(o.results, want) {
				t.Errorf("%s: translation predicts %v, want %v", where, o.results, want)
			}
			if p.fp == nil {
				if ref := r.obs["kube-proxy"]; j < len(ref) && ref[j].err == nil && !p.oneOf && !slices.Equal(ref[j].results, o.results) {
					t.Errorf("%s: DIFFERS from kube-proxy: translation predicts %v, kube-proxy reached %v", where, o.results, ref[j].results)
				}
			}
		}
	}
}
