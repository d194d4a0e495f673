package conformance

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/fastpath-net/fastpath/internal/testenv"
	"github.com/fastpath-net/fastpath/internal/testpriv"
)

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		fmt.Println("conformance: skipped in -short mode (needs root, a control plane and kube-proxy)")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const (
	markerWait   = 30 * time.Second // per step, per side
	startWait    = 90 * time.Second // first sync after start
	probeTimeout = time.Second      // one connection or exchange
)

// side is one contender with its own topology.
type side struct {
	proxy Proxy
	topo  *Topology
	// dead is set when the proxy failed to sync; its later cases fail fast.
	dead error
}

type harness struct {
	env    *testenv.Env
	client kubernetes.Interface
	marker *marker
	sides  []*side
	// fastpathProblem says why fastpath is not compared ("" when it is).
	fastpathProblem string
	kubeProxyOnly   bool
}

// TestConformance runs every case of cases against the real kube-proxy and,
// when comparable, fastpath, each in its own node topology, fed by one
// apiserver, and asserts that every probe reaches the same backends.
func TestConformance(t *testing.T) {
	h := setup(t)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { h.runCase(t, i+1, tc) })
	}
	t.Run("health-endpoints", h.compareHealth) // health_test.go
}

func setup(t *testing.T) *harness {
	testpriv.Require(t)
	for _, tool := range []string{"iptables", "iptables-save", "iptables-restore", "ip6tables"} {
		if _, err := exec.LookPath(tool); err != nil {
			testpriv.Unavailable(t, tool+" not found: kube-proxy's iptables mode needs Debian's iptables package (hack/install-deps.sh installs it)")
		}
	}
	kp, err := newKubeProxy()
	if err != nil {
		testpriv.Unavailable(t, "no kube-proxy binary: run `make k8s-tools` ("+err.Error()+")")
	}
	// Before anything of ours exists: the root namespace's rules, which
	// must be the same when the test ends.
	rootBefore := rootRules(t)
	t.Cleanup(func() {
		if after := rootRules(t); after != rootBefore {
			t.Errorf("SAFETY: the root network namespace's iptables rules changed during the test.\nbefore:\n%s\nafter:\n%s", rootBefore, after)
		}
	})
	collectLeftovers()

	h := &harness{kubeProxyOnly: os.Getenv(KubeProxyOnlyEnv) == "1"}
	var fp *fastpathAgent
	switch {
	case h.kubeProxyOnly:
		h.fastpathProblem = KubeProxyOnlyEnv + "=1"
	case !FastpathSideEnabled:
		h.fastpathProblem = "FastpathSideEnabled is false in test/conformance/fastpath.go: the fastpath side is not wired yet"
	default:
		bin, err := buildAgent(t.TempDir())
		if err != nil {
			h.fastpathProblem = err.Error()
			break
		}
		fp = &fastpathAgent{bin: bin}
	}

	h.env = testenv.StartForTest(t, testenv.Options{
		AdvertiseAddress:      advertiseAddr.String(),
		ServiceClusterIPRange: "10.96.0.0/16",
		// The control-plane ends of the node links.
		ExtraSANs: cpSANs(),
	})
	h.client = h.env.Clientset
	ctx := t.Context()
	if _, err := h.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := createNodes(ctx, h.client); err != nil {
		t.Fatal(err)
	}
	if h.marker, err = newMarker(ctx, h.client); err != nil {
		t.Fatal(err)
	}

	contenders := []Proxy{kp}
	if fp != nil {
		contenders = append(contenders, fp)
	}
	dir := t.TempDir()
	for i, p := range contenders {
		tag := map[string]string{"kube-proxy": "kp", "fastpath": "fp"}[p.Name()]
		topo, err := NewTopology(tag, i+1, h.env)
		if err != nil {
			t.Fatal(err)
		}
		s := &side{proxy: p, topo: topo}
		// Cleanups run last-in first-out: the proxy stops before its
		// topology goes, and both before the control plane stops.
		t.Cleanup(func() {
			if err := topo.Close(); err != nil {
				t.Errorf("remove %s topology: %v", p.Name(), err)
			}
		})
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("--- %s log (tail) ---\n%s", p.Name(), p.Logs())
			}
			if err := p.Stop(); err != nil {
				t.Errorf("stop %s: %v", p.Name(), err)
			}
		})
		if err := topo.StartServers(); err != nil {
			t.Fatal(err)
		}
		sideDir := dir + "/" + tag
		if err := os.Mkdir(sideDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := p.Start(ctx, h.env, topo, sideDir); err != nil {
			t.Fatalf("start %s: %v", p.Name(), err)
		}
		h.sides = append(h.sides, s)
	}
	// The first sync: every side shows the marker's first generation.
	for _, s := range h.sides {
		if err := h.waitMarker(s, startWait); err != nil {
			if s.proxy.Name() == "fastpath" {
				h.fastpathProblem = "fastpath never programmed the marker Service after start: " + err.Error()
				s.dead = err
				continue
			}
			t.Fatalf("%s: %v", s.proxy.Name(), err)
		}
	}
	if h.fastpathProblem != "" {
		t.Logf("!!! FASTPATH SIDE NOT COMPARED: %s", h.fastpathProblem)
	}
	return h
}

// rootRules is the root namespace's ruleset in both iptables backends
// (comment lines, which hold timestamps, left out). The test process runs
// in the root namespace, so these run there.
func rootRules(t *testing.T) string {
	var b strings.Builder
	for _, cmd := range [][]string{{"iptables-save"}, {"ip6tables-save"}, {"iptables-legacy-save"}, {"ip6tables-legacy-save"}} {
		if _, err := exec.LookPath(cmd[0]); err != nil {
			continue
		}
		out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s in the root namespace: %v\n%s", cmd[0], err, out)
		}
		fmt.Fprintf(&b, "== %s\n", cmd[0])
		for _, l := range strings.Split(string(out), "\n") {
			if !strings.HasPrefix(l, "#") && l != "" {
				b.WriteString(l + "\n")
			}
		}
	}
	return b.String()
}

// waitMarker waits until s's proxy shows the marker's current generation.
func (h *harness) waitMarker(s *side, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var lastErr error
	for time.Now().Before(deadline) {
		ok, err := s.proxy.HasMarker(h.marker.vip, h.marker.port())
		if ok {
			return nil
		}
		lastErr = err
		time.Sleep(25 * time.Millisecond)
	}
	return fmt.Errorf("marker %s:%d not programmed within %s (last error: %v)\n--- log ---\n%s",
		h.marker.vip, h.marker.port(), limit, lastErr, s.proxy.Logs())
}

// ---- cases ----

// testCase is one row of the table: steps of object changes, each followed
// by probes whose outcome classes every side must show.
type testCase struct {
	name  string
	steps []step
}

type step struct {
	name  string
	apply func(c *caseCtx)
	// newFrontends, when set, are exactly the frontends this step adds on
	// every side (addr:port/PROTO): checks of what is programmed where
	// traffic cannot tell (headless, ExternalName, SCTP).
	newFrontends func(c *caseCtx) []string
	probes       []probe
}

// target computes a probe's destination from the applied objects.
type target struct {
	desc string
	addr func(c *caseCtx) string
}

type probe struct {
	from  string // host that connects: client, ext, be1...
	proto string // tcp, udp, sctp
	to    target
	want  []string // the exact set of outcomes: "be1:8080", refused, timeout...
	oneOf bool     // session affinity: one outcome, a member of want
	src   []string // the set of sources the backends saw: client, node (nil: not checked)
	sport int      // UDP: every attempt from this source port (one flow); 0: a fresh port each
	fp    *fpDiff  // fastpath's documented difference, if any
}

// fpDiff is where fastpath documents a different behaviour than
// kube-proxy's; the fastpath side then asserts this instead.
type fpDiff struct {
	want []string // nil: same as kube-proxy
	src  []string // nil: same as kube-proxy
	kind string   // "deliberate" or "gap" (documented, not yet implemented)
	why  string
}

func tcp(from string, to target, want ...string) probe {
	return probe{from: from, proto: "tcp", to: to, want: expand(want)}
}

func udp(from string, to target, want ...string) probe {
	return probe{from: from, proto: "udp", to: to, want: expand(want)}
}

// sctp probes with one INIT chunk per attempt (see sctp.go).
func sctp(from string, to target, want ...string) probe {
	return probe{from: from, proto: "sctp", to: to, want: expand(want)}
}

// source asserts the set of addresses the backends saw over all attempts:
// "client" (the prober's own) and/or "node" (one of the node's:
// masqueraded).
func (p probe) source(s ...string) probe { p.src = sorted(s); return p }

func sorted(s []string) []string {
	if s == nil {
		return nil
	}
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// fromPort makes every attempt of a UDP probe use source port sport, so
// they are one flow, and a later step's probe from the same port continues it.
func (p probe) fromPort(sport int) probe { p.sport = sport; return p }

// one asserts session affinity: every attempt reaches the same backend.
func (p probe) one() probe { p.oneOf = true; return p }

// agentDifference is what the fastpath agent does differently from
// kube-proxy across many cases at once; nil when it should agree.
//   - deliberate: a pod reaching a LoadBalancer IP, externalIP or NodePort
//     keeps its source address (as with Cilium); kube-proxy masquerades it.
func agentDifference(p probe) *fpDiff {
	switch {
	case p.from == "client" && slices.Equal(p.src, []string{"node"}) &&
		(strings.HasPrefix(p.to.desc, "LB-IP") || strings.HasPrefix(p.to.desc, "externalIP") ||
			strings.Contains(p.to.desc, "NodeIP:nodePort")):
		return &fpDiff{kind: "deliberate", why: whyPodToExternalKeepsSource, src: []string{"client"}}
	}
	return nil
}

const whyPodToExternalKeepsSource = "fastpath does not masquerade a pod's traffic to a LoadBalancer IP, " +
	"externalIP or NodePort: the backend sees the pod's address"

// fastpathDiffers records fastpath's documented difference.
func (p probe) fastpathDiffers(kind, why string, want []string, src []string) probe {
	p.fp = &fpDiff{kind: kind, why: why, want: expand(want), src: sorted(src)}
	return p
}

// expand turns "be1" into "be1:8080" (the default target port); other
// outcomes stay as they are.
func expand(want []string) []string {
	if want == nil {
		return nil
	}
	out := make([]string, 0, len(want))
	for _, w := range want {
		if strings.HasPrefix(w, "be") && !strings.Contains(w, ":") {
			w += ":8080"
		}
		out = append(out, w)
	}
	sort.Strings(out)
	return out
}

func cip(svc string, port int) target {
	return target{desc: fmt.Sprintf("%s ClusterIP:%d", svc, port), addr: func(c *caseCtx) string {
		return netip.AddrPortFrom(netip.MustParseAddr(c.service(svc).Spec.ClusterIP), uint16(port)).String()
	}}
}

func nodePort(svc, portName string) target {
	return target{desc: fmt.Sprintf("%s NodeIP:nodePort(%s)", svc, portName), addr: func(c *caseCtx) string {
		for _, p := range c.service(svc).Spec.Ports {
			if p.Name == portName {
				if p.NodePort == 0 {
					c.t.Fatalf("service %s port %s has no nodePort", svc, portName)
				}
				return fmt.Sprintf("%s:%d", nodeIPStr, p.NodePort)
			}
		}
		c.t.Fatalf("service %s has no port %s", svc, portName)
		return ""
	}}
}

// lbIP is the case's k-th load-balancer ingress IP; extIPs its k-th external IP.
func lbIP(k, port int) target {
	return target{desc: fmt.Sprintf("LB-IP#%d:%d", k, port), addr: func(c *caseCtx) string {
		return fmt.Sprintf("%s:%d", c.lbIP(k), port)
	}}
}

func extIPt(k, port int) target {
	return target{desc: fmt.Sprintf("externalIP#%d:%d", k, port), addr: func(c *caseCtx) string {
		return fmt.Sprintf("%s:%d", c.externalIP(k), port)
	}}
}

func literal(addr string) target {
	return target{desc: addr, addr: func(*caseCtx) string { return addr }}
}

// caseCtx applies one case's objects. Every name gets the case's prefix, so
// cases never share a Service, and the case's objects are deleted at its end.
type caseCtx struct {
	t      *testing.T
	h      *harness
	ctx    context.Context
	idx    int
	prefix string
	svcs   map[string]*corev1.Service // logical name -> as the apiserver has it
	slices map[string]bool            // full names of the case's slices
}

func (c *caseCtx) lbIP(k int) string       { return fmt.Sprintf("203.0.113.%d", c.idx*4+k+1) }
func (c *caseCtx) externalIP(k int) string { return fmt.Sprintf("198.51.100.%d", c.idx*4+k+1) }

func (c *caseCtx) service(name string) *corev1.Service {
	s := c.svcs[name]
	if s == nil {
		c.t.Fatalf("case has no service %s", name)
	}
	return s
}

// apply creates or replaces Services and EndpointSlices.
func (c *caseCtx) apply(objs ...any) {
	c.t.Helper()
	for _, o := range objs {
		switch o := o.(type) {
		case *corev1.Service:
			s := o.DeepCopy()
			logical := s.Name
			s.Name = c.prefix + s.Name
			got, err := upsertService(c.ctx, c.h.client, s)
			if err != nil {
				c.t.Fatalf("apply service %s: %v", s.Name, err)
			}
			c.svcs[logical] = got
		case *discoveryv1.EndpointSlice:
			s := o.DeepCopy()
			s.Name = c.prefix + s.Name
			s.Labels[discoveryv1.LabelServiceName] = c.prefix + s.Labels[discoveryv1.LabelServiceName]
			if err := upsertSlice(c.ctx, c.h.client, s); err != nil {
				c.t.Fatalf("apply slice %s: %v", s.Name, err)
			}
			c.slices[s.Name] = true
		default:
			c.t.Fatalf("apply: unexpected %T", o)
		}
	}
}

// setLB writes the service's load-balancer ingress: the case's k-th LB IP.
func (c *caseCtx) setLB(svc string, k int) {
	c.t.Helper()
	if err := setLoadBalancerIP(c.ctx, c.h.client, c.prefix+svc, c.lbIP(k)); err != nil {
		c.t.Fatalf("load balancer status of %s: %v", svc, err)
	}
}

func (c *caseCtx) deleteService(name string) {
	c.t.Helper()
	if err := c.h.client.CoreV1().Services(namespace).Delete(c.ctx, c.prefix+name, metav1.DeleteOptions{}); err != nil {
		c.t.Fatalf("delete service %s: %v", name, err)
	}
}

func (c *caseCtx) deleteSlice(name string) {
	c.t.Helper()
	full := c.prefix + name
	if err := c.h.client.DiscoveryV1().EndpointSlices(namespace).Delete(c.ctx, full, metav1.DeleteOptions{}); err != nil {
		c.t.Fatalf("delete slice %s: %v", name, err)
	}
	delete(c.slices, full)
}

// refresh re-reads the case's Services (ClusterIPs, NodePorts).
func (c *caseCtx) refresh() {
	for logical := range c.svcs {
		s, err := c.h.client.CoreV1().Services(namespace).Get(c.ctx, c.prefix+logical, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue // deleted by the step; keep the last view for probes
		}
		if err != nil {
			c.t.Fatalf("get service %s: %v", logical, err)
		}
		c.svcs[logical] = s
	}
}

func (c *caseCtx) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for logical := range c.svcs {
		err := c.h.client.CoreV1().Services(namespace).Delete(ctx, c.prefix+logical, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			c.t.Errorf("cleanup: delete service %s: %v", logical, err)
		}
	}
	for name := range c.slices {
		err := c.h.client.DiscoveryV1().EndpointSlices(namespace).Delete(ctx, name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			c.t.Errorf("cleanup: delete slice %s: %v", name, err)
		}
	}
}

// observed is what one side saw for one probe.
type observed struct {
	addr    string
	results []string // sorted set of outcomes
	sources []string // sorted set of source classes seen by backends
	err     error    // the side could not run the probe (not synced, ...)
}

// stepResult holds, per side name, the observations of each probe of a step,
// and the frontends the step added.
type stepResult struct {
	obs       map[string][]observed
	frontends map[string][]string
	feErr     map[string]error
	wantFE    []string
	// The translation oracle's predictions (oracle_test.go).
	oracle   []observed
	oracleFE []string
}

func (h *harness) runCase(t *testing.T, idx int, tc testCase) {
	c := &caseCtx{t: t, h: h, ctx: t.Context(), idx: idx, prefix: fmt.Sprintf("c%02d-", idx),
		svcs: map[string]*corev1.Service{}, slices: map[string]bool{}}
	t.Cleanup(c.cleanup)
	results := make([]stepResult, len(tc.steps))
	for i, st := range tc.steps {
		results[i] = h.runStep(c, st)
	}
	h.logTable(t, tc, results)
	for _, s := range h.sides {
		t.Run(s.proxy.Name(), func(t *testing.T) { h.assertSide(t, s, tc, results) })
	}
	if h.fastpathProblem != "" && !h.hasSide("fastpath") {
		t.Run("fastpath", func(t *testing.T) { h.notComparable(t) })
	}
	t.Run(oracleName, func(t *testing.T) { h.assertOracle(t, tc, results) })
}

func (h *harness) hasSide(name string) bool {
	return slices.ContainsFunc(h.sides, func(s *side) bool { return s.proxy.Name() == name })
}

func (h *harness) notComparable(t *testing.T) {
	msg := "fastpath side NOT COMPARED: " + h.fastpathProblem
	if h.kubeProxyOnly {
		t.Skip("!!! SKIPPING (" + KubeProxyOnlyEnv + "=1): " + msg)
	}
	t.Fatal(msg + "\n(set " + KubeProxyOnlyEnv + "=1 to run the kube-proxy side alone)")
}

func (h *harness) runStep(c *caseCtx, st step) stepResult {
	t := c.t
	res := stepResult{obs: map[string][]observed{}, frontends: map[string][]string{}, feErr: map[string]error{}}
	before := map[string][]string{}
	if st.newFrontends != nil {
		for _, s := range h.live() {
			fe, err := s.proxy.Frontends()
			before[s.proxy.Name()], res.feErr[s.proxy.Name()] = fe, err
		}
	}
	st.apply(c)
	c.refresh()
	if st.newFrontends != nil {
		res.wantFE = st.newFrontends(c)
		slices.Sort(res.wantFE)
	}
	if err := h.marker.bump(c.ctx); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, s := range h.live() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := h.waitMarker(s, markerWait); err != nil {
				s.dead = err
			}
		}()
	}
	wg.Wait()
	if st.newFrontends != nil {
		for _, s := range h.live() {
			name := s.proxy.Name()
			after, err := s.proxy.Frontends()
			if err != nil || res.feErr[name] != nil {
				res.feErr[name] = errors.Join(res.feErr[name], err)
				continue
			}
			var added []string
			for _, fe := range after {
				if !slices.Contains(before[name], fe) && !strings.HasPrefix(fe, h.marker.vip+":") {
					added = append(added, fe)
				}
			}
			res.frontends[name] = added
		}
	}
	snap := h.snapshot(c)
	if st.newFrontends != nil {
		res.oracleFE = snap.caseFrontends(c.prefix)
	}
	for _, p := range st.probes {
		addr := p.to.addr(c)
		res.oracle = append(res.oracle, snap.predict(p, addr))
		n := attemptsFor(p)
		var mu sync.Mutex
		for _, s := range h.live() {
			wg.Add(1)
			go func() {
				defer wg.Done()
				o := probeSide(s, p, addr, n)
				mu.Lock()
				res.obs[s.proxy.Name()] = append(res.obs[s.proxy.Name()], o)
				mu.Unlock()
			}()
		}
		wg.Wait()
		// Keep probe order per side: every side appends once per probe.
	}
	return res
}

// live are the sides still able to take part.
func (h *harness) live() []*side {
	var out []*side
	for _, s := range h.sides {
		if s.dead == nil {
			out = append(out, s)
		}
	}
	return out
}

func probeSide(s *side, p probe, addr string, n int) observed {
	o := observed{addr: addr}
	host := s.topo.Hosts[p.from]
	if host == nil {
		o.err = fmt.Errorf("no host %s", p.from)
		return o
	}
	// Where no side expects a timeout, two are enough to fail the probe.
	maxTimeouts := 2
	if slices.Contains(p.want, Timeout) || (p.fp != nil && slices.Contains(p.fp.want, Timeout)) {
		maxTimeouts = n
	}
	var attempts []attempt
	var err error
	if p.proto == "sctp" {
		attempts, err = probeSCTP(host.NS, s.topo.sctp, addr, n, maxTimeouts, probeTimeout)
	} else {
		attempts, err = probeN(host.NS, p.proto, addr, p.sport, n, maxTimeouts, probeTimeout)
	}
	if err != nil {
		o.err = err
		return o
	}
	nodeAddrs := s.topo.NodeAddrs()
	res, src := map[string]bool{}, map[string]bool{}
	for _, a := range attempts {
		res[a.Result] = true
		if a.Source.IsValid() {
			switch {
			case a.Source == host.Addr:
				src["client"] = true
			case nodeAddrs[a.Source]:
				src["node"] = true
			default:
				src[a.Source.String()] = true
			}
		}
	}
	o.results, o.sources = keys(res), keys(src)
	return o
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// attemptsFor is how many connections a probe makes: enough that a side
// which reaches every wanted backend at random misses one with probability
// below 1e-8 (m backends, k attempts: m*(1-1/m)^k), so that the whole table
// (about 70 such probes per side) flakes less than once in a million runs;
// and a few for outcomes that do not depend on chance.
func attemptsFor(p probe) int {
	if p.oneOf {
		// Without affinity, 20 attempts over m>=2 backends all land on
		// one with probability m*(1/m)^20 < 1e-5 (m=2), 1e-9 (m=3).
		return 20
	}
	m := 0
	sets := [][]string{p.want}
	if p.fp != nil && p.fp.want != nil {
		sets = append(sets, p.fp.want)
	}
	for _, set := range sets {
		n := 0
		for _, w := range set {
			if w != Refused && w != Timeout && w != Unreachable {
				n++
			}
		}
		m = max(m, n)
	}
	switch m {
	case 0:
		return 2
	case 1:
		return 3
	}
	k := math.Ceil(math.Log(1e-8/float64(m)) / math.Log(1-1/float64(m)))
	return int(k)
}

func (h *harness) logTable(t *testing.T, tc testCase, results []stepResult) {
	var b strings.Builder
	for i, st := range tc.steps {
		for j, p := range st.probes {
			fmt.Fprintf(&b, "  step %d %-12s %-4s %-6s -> %-34s want %v", i+1, st.name, p.proto, p.from, p.to.desc, p.want)
			if p.oneOf {
				b.WriteString(" (one of)")
			}
			if p.src != nil {
				fmt.Fprintf(&b, " src=%v", p.src)
			}
			b.WriteString("\n")
			for _, s := range h.sides {
				obs := results[i].obs[s.proxy.Name()]
				if j < len(obs) {
					o := obs[j]
					fmt.Fprintf(&b, "      %-10s %s: %v src=%v", s.proxy.Name(), o.addr, o.results, o.sources)
					if o.err != nil {
						fmt.Fprintf(&b, " error=%v", o.err)
					}
					b.WriteString("\n")
				}
			}
			if j < len(results[i].oracle) {
				o := results[i].oracle[j]
				fmt.Fprintf(&b, "      %-10s predicts %v", "translation", o.results)
				if o.err != nil {
					fmt.Fprintf(&b, " error=%v", o.err)
				}
				b.WriteString("\n")
			}
		}
		if st.newFrontends != nil {
			for _, s := range h.sides {
				fmt.Fprintf(&b, "  step %d %-12s %-10s new frontends %v\n", i+1, st.name, s.proxy.Name(), results[i].frontends[s.proxy.Name()])
			}
		}
	}
	t.Logf("\n%s", b.String())
}

func (h *harness) assertSide(t *testing.T, s *side, tc testCase, results []stepResult) {
	name := s.proxy.Name()
	if s.dead != nil {
		if name == "fastpath" && h.kubeProxyOnly {
			t.Skip("!!! SKIPPING fastpath (" + KubeProxyOnlyEnv + "=1): " + s.dead.Error())
		}
		t.Fatalf("%s stopped syncing: %v", name, s.dead)
	}
	kp := "kube-proxy"
	for i, st := range tc.steps {
		if st.newFrontends != nil {
			if err := results[i].feErr[name]; err != nil {
				t.Errorf("step %d (%s): frontends: %v", i+1, st.name, err)
			} else {
				want := results[i].wantFE
				got := results[i].frontends[name]
				if !slices.Equal(got, want) {
					t.Errorf("step %d (%s): new frontends %v, want %v", i+1, st.name, got, want)
				}
			}
		}
		obs := results[i].obs[name]
		if len(obs) != len(st.probes) {
			t.Errorf("step %d (%s): %d observations for %d probes", i+1, st.name, len(obs), len(st.probes))
			continue
		}
		for j, p := range st.probes {
			o := obs[j]
			where := fmt.Sprintf("step %d (%s) %s %s -> %s (%s)", i+1, st.name, p.proto, p.from, p.to.desc, o.addr)
			if o.err != nil {
				t.Errorf("%s: %v", where, o.err)
				continue
			}
			want, src := p.want, p.src
			if name == "fastpath" && p.fp == nil {
				p.fp = agentDifference(p)
			}
			if name == "fastpath" && p.fp != nil {
				if p.fp.want != nil {
					want = p.fp.want
				}
				if p.fp.src != nil {
					src = p.fp.src
				}
				t.Logf("KNOWN DIFFERENCE (%s) %s: fastpath asserts %v src=%v: %s", p.fp.kind, where, want, src, p.fp.why)
			}
			checkOutcome(t, where, p, want, src, o)
			// The differential check proper: fastpath against what
			// kube-proxy did in its own topology just now.
			if name != kp && p.fp == nil {
				if ref := results[i].obs[kp]; j < len(ref) && ref[j].err == nil {
					r := ref[j]
					same := slices.Equal(r.results, o.results)
					if p.oneOf {
						same = len(r.results) == 1 && len(o.results) == 1
					}
					if !same {
						t.Errorf("%s: DIFFERS from kube-proxy: %s reached %v, kube-proxy %v", where, name, o.results, r.results)
					}
					if p.src != nil && !slices.Equal(r.sources, o.sources) {
						t.Errorf("%s: source DIFFERS from kube-proxy: backends saw %v, with kube-proxy %v", where, o.sources, r.sources)
					}
				}
			}
		}
	}
}

func checkOutcome(t *testing.T, where string, p probe, want, src []string, o observed) {
	t.Helper()
	if p.oneOf {
		if len(o.results) != 1 || !slices.Contains(want, o.results[0]) {
			t.Errorf("%s: reached %v, want exactly one of %v (session affinity)", where, o.results, want)
		}
	} else if !slices.Equal(o.results, want) {
		t.Errorf("%s: reached %v, want %v", where, o.results, want)
	}
	if src != nil && len(o.sources) > 0 && !slices.Equal(o.sources, src) {
		t.Errorf("%s: backends saw sources %v, want %v", where, o.sources, src)
	}
}
