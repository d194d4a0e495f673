package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"text/template"
	"time"

	"golang.org/x/tools/txtar"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/fastpath-net/fastpath/internal/nettopo"
	"github.com/fastpath-net/fastpath/internal/policy"
	"github.com/fastpath-net/fastpath/internal/policy/policytest"
	"github.com/fastpath-net/fastpath/internal/routing"
	"github.com/fastpath-net/fastpath/internal/testpriv"
)

// TestPolicyTruthTable is the NetworkPolicy truth-table suite of issue 5,
// modelled on the upstream sig-network netpol e2e suite: namespaces x, y, z
// with pods a, b, c each (a and c on node1, b on node2), every pod serving
// 80 and 81 on TCP, UDP and SCTP (sctp_test.go). Every step of every case
// (the golden cases of internal/policy/testdata, then the lab's own in
// testdata/netpol) is applied to the real apiserver; then the whole matrix
// (9 x 8 pairs x 6 port/protocols) is probed with real packets until it equals, twice in a
// row, the matrix the oracle of internal/policy/policytest computes from the
// objects the apiserver holds, or the step fails showing both tables.
// `fastpathctl policy trace` must agree with the packets too.
func TestPolicyTruthTable(t *testing.T) {
	testpriv.Require(t)
	if testing.Short() {
		t.Skip("starts a control plane and two nodes")
	}
	bin := buildLab(t)
	start := time.Now()
	startLab(t, bin, routing.ModeNative)
	tt := newTruthTable(t, bin)
	t.Logf("lab and the truth table's 9 pods up in %.1fs", time.Since(start).Seconds())
	if !tt.check(t, "no policy") {
		t.FailNow()
	}
	for _, c := range truthCases(t) {
		t.Run(strings.TrimSuffix(filepath.Base(c.path), ".txtar"), func(t *testing.T) { tt.run(t, c) })
		tt.reset(t)
	}
	t.Run("established", tt.established)
	tt.reset(t)
}

const (
	// probeWait bounds one probe: an allowed one answers in milliseconds,
	// a denied one (its SYN or datagram dropped) waits this long.
	probeWait = time.Second
	// convergeWait bounds how long a step's matrix may take to settle.
	convergeWait = 30 * time.Second
)

var (
	truthNamespaces = []string{"x", "y", "z"}
	truthProtos     = []policy.Proto{policy.TCP, policy.UDP, policy.SCTP}
)

// truthTable is the suite's cluster side: the nine pods, their servers and
// the clients that probe from inside them.
type truthTable struct {
	cs   kubernetes.Interface
	dyn  dynamic.Interface
	bin  string
	pods map[string]pod         // "x/a" -> pod with its address
	nss  map[string]*nettopo.NS // "x/a" -> its network namespace
	sctp map[string]*sctpPeer   // "x/a" -> its SCTP client and server
	step int                    // steps checked so far, to vary the trace samples
	// relabelled: "pods x/a" or "namespaces x" whose labels a case set.
	relabelled map[string]bool
}

func newTruthTable(t *testing.T, bin string) *truthTable {
	t.Helper()
	ctx := t.Context()
	cfg, ext, err := restConfig()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ext.Release)
	tt := &truthTable{bin: bin, pods: map[string]pod{}, nss: map[string]*nettopo.NS{}, sctp: map[string]*sctpPeer{},
		relabelled: map[string]bool{}}
	if tt.cs, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if tt.dyn, err = dynamic.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	for _, ns := range truthNamespaces {
		obj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"ns": ns}}}
		if _, err := tt.cs.CoreV1().Namespaces().Create(ctx, obj, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var servers []*nettopo.Whoami
	t.Cleanup(func() {
		for _, s := range servers {
			s.Close()
		}
		for _, p := range tt.sctp {
			p.Close()
		}
		for _, ns := range tt.nss {
			ns.Release()
		}
	})
	for _, ns := range truthNamespaces {
		for _, name := range []string{"a", "b", "c"} {
			p := pod{name: name, ns: ns, node: 1}
			if name == "b" {
				p.node = 2
			}
			if p, err = addPod(ctx, bin, p); err != nil {
				t.Fatal(err)
			}
			key := ns + "/" + name
			tt.pods[key] = p
			if tt.nss[key], err = nettopo.OpenNS(podNSName(p.key())); err != nil {
				t.Fatal(err)
			}
			for _, port := range []string{"80", "81"} {
				s, err := nettopo.StartWhoami(tt.nss[key], key, net.JoinHostPort(p.ip.String(), port))
				if err != nil {
					t.Fatal(err)
				}
				servers = append(servers, s)
			}
			if tt.sctp[key], err = startSCTPPeer(tt.nss[key], key, p.ip); err != nil {
				t.Fatal(err)
			}
			if err := registerPodObject(ctx, tt.cs, p, map[string]string{"pod": name}, truthContainer()); err != nil {
				t.Fatal(err)
			}
		}
	}
	return tt
}

// truthContainer declares the ports the pods serve under the upstream
// suite's names, which named-port rules resolve.
func truthContainer() corev1.Container {
	c := corev1.Container{Name: "cont", Image: "fastpath.lab/whoami"}
	for _, port := range []int32{80, 81} {
		for _, proto := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP} {
			c.Ports = append(c.Ports, corev1.ContainerPort{
				Name: fmt.Sprintf("serve-%d-%s", port, strings.ToLower(string(proto))), ContainerPort: port, Protocol: proto,
			})
		}
	}
	return c
}

// truthCase is a txtar archive whose "apply" and "delete" sections are
// the steps; other sections (a golden case's "want" tables) are not the
// lab's business.
type truthCase struct {
	path string
	ar   *txtar.Archive
}

// notInLab are golden cases on the base topology that the lab cannot
// replay as they are: their ipBlocks name the golden topology's addresses.
// testdata/netpol has them with the lab's addresses.
var notInLab = map[string]string{
	"ipblock.txtar":  "testdata/netpol/ipblock.txtar",
	"more-e2e.txtar": "testdata/netpol/ipblock.txtar and more-e2e.txtar",
}

func truthCases(t *testing.T) []truthCase {
	t.Helper()
	golden, err := filepath.Glob("../policy/testdata/*.txtar")
	if err != nil {
		t.Fatal(err)
	}
	own, err := filepath.Glob("testdata/netpol/*.txtar")
	if err != nil {
		t.Fatal(err)
	}
	if len(golden) == 0 || len(own) == 0 {
		t.Fatalf("no cases: %d golden, %d of the lab's", len(golden), len(own))
	}
	var cases []truthCase
	for _, path := range append(golden, own...) {
		ar, err := txtar.ParseFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(path, "../") {
			// A golden case's first line says whether it starts from the
			// base topology, the lab's nine pods.
			if first, _, _ := strings.Cut(string(ar.Comment), "\n"); first != "base" {
				t.Logf("%s: not on the base topology, not replayed", path)
				continue
			}
			if why, ok := notInLab[filepath.Base(path)]; ok {
				t.Logf("%s: replaced in the lab by %s", path, why)
				continue
			}
		}
		cases = append(cases, truthCase{path: path, ar: ar})
	}
	return cases
}

// errNotReplayable stops a case at a step the lab cannot make (deleting a
// pod or a namespace would take the pod's network down with it).
var errNotReplayable = errors.New("not replayable in the lab")

func (tt *truthTable) run(t *testing.T, c truthCase) {
	n := 0
	for _, f := range c.ar.Files {
		var err error
		switch f.Name {
		case "apply":
			err = tt.apply(t.Context(), f.Data)
		case "delete":
			err = tt.delete(t.Context(), f.Data)
		default:
			continue
		}
		n++
		if errors.Is(err, errNotReplayable) {
			t.Logf("step %d: %v; the case ends here", n, err)
			return
		}
		if err != nil {
			t.Fatalf("%s step %d: %v", c.path, n, err)
		}
		if !tt.check(t, fmt.Sprintf("%s step %d (%s)", c.path, n, f.Name)) {
			return // the next steps build on this one
		}
	}
}

// apply creates or updates the YAML documents' objects. Templates name the
// lab's addresses: {{ip "y/b"}} is pod y/b's, {{net "y/b" 24}} the /24
// holding it. A Namespace or Pod document sets the object's labels (a pod
// keeps its spec: the lab changes labels only).
func (tt *truthTable) apply(ctx context.Context, data []byte) error {
	data, err := tt.expand(data)
	if err != nil {
		return err
	}
	return policytest.Documents(data, func(kind string, doc []byte) error {
		var meta metav1.PartialObjectMetadata
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			return err
		}
		var err error
		switch kind {
		case "NetworkPolicy":
			err = tt.applyPolicy(ctx, doc)
		case "Namespace":
			err = tt.setLabels(ctx, "namespaces", "", meta.Name, meta.Labels)
		case "Pod":
			err = tt.setLabels(ctx, "pods", meta.Namespace, meta.Name, meta.Labels)
		default:
			err = fmt.Errorf("kind %q", kind)
		}
		if err != nil {
			return fmt.Errorf("%s %s/%s: %w", kind, meta.Namespace, meta.Name, err)
		}
		return nil
	})
}

func (tt *truthTable) expand(data []byte) ([]byte, error) {
	addr := func(name string) (netip.Addr, error) {
		p, ok := tt.pods[name]
		if !ok {
			return netip.Addr{}, fmt.Errorf("no pod %q", name)
		}
		return p.ip, nil
	}
	tmpl, err := template.New("").Funcs(template.FuncMap{
		"ip": func(name string) (string, error) {
			a, err := addr(name)
			return a.String(), err
		},
		"net": func(name string, bits int) (string, error) {
			a, err := addr(name)
			if err != nil {
				return "", err
			}
			p, err := a.Prefix(bits)
			return p.String(), err
		},
	}).Parse(string(data))
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	err = tmpl.Execute(&b, nil)
	return b.Bytes(), err
}

func (tt *truthTable) applyPolicy(ctx context.Context, doc []byte) error {
	var np networkingv1.NetworkPolicy
	if err := yaml.UnmarshalStrict(doc, &np); err != nil {
		return err
	}
	api := tt.cs.NetworkingV1().NetworkPolicies(np.Namespace)
	_, err := api.Create(ctx, &np, metav1.CreateOptions{})
	if !apierrors.IsAlreadyExists(err) {
		return err
	}
	cur, err := api.Get(ctx, np.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	cur.Labels, cur.Spec = np.Labels, np.Spec
	_, err = api.Update(ctx, cur, metav1.UpdateOptions{})
	return err
}

// setLabels replaces a Namespace's or Pod's labels (the apiserver keeps a
// namespace's kubernetes.io/metadata.name itself).
func (tt *truthTable) setLabels(ctx context.Context, resource, ns, name string, labels map[string]string) error {
	if labels == nil {
		labels = map[string]string{}
	}
	tt.relabelled[resource+" "+path.Join(ns, name)] = true
	switch resource {
	case "namespaces":
		cur, err := tt.cs.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Labels = labels
		_, err = tt.cs.CoreV1().Namespaces().Update(ctx, cur, metav1.UpdateOptions{})
		return err
	default:
		cur, err := tt.cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Labels = labels
		_, err = tt.cs.CoreV1().Pods(ns).Update(ctx, cur, metav1.UpdateOptions{})
		return err
	}
}

// delete deletes NetworkPolicies named one a line ("networkpolicy NS/N").
func (tt *truthTable) delete(ctx context.Context, data []byte) error {
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		kind, name, _ := strings.Cut(line, " ")
		if kind != "networkpolicy" {
			return fmt.Errorf("delete %q: %w", line, errNotReplayable)
		}
		ns, n, _ := strings.Cut(name, "/")
		if err := tt.cs.NetworkingV1().NetworkPolicies(ns).Delete(ctx, n, metav1.DeleteOptions{}); err != nil {
			return err
		}
	}
	return nil
}

// reset deletes every policy of the suite's namespaces and gives pods and
// namespaces back their original labels.
func (tt *truthTable) reset(t *testing.T) {
	t.Helper()
	ctx := t.Context()
	for _, ns := range truthNamespaces {
		if err := tt.cs.NetworkingV1().NetworkPolicies(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for key := range tt.relabelled {
		resource, name, _ := strings.Cut(key, " ")
		ns, n, ok := strings.Cut(name, "/")
		labels := map[string]string{"pod": n}
		if !ok {
			ns, n, labels = "", name, map[string]string{"ns": name}
		}
		if err := tt.setLabels(ctx, resource, ns, n, labels); err != nil {
			t.Fatalf("%s: %v", key, err)
		}
	}
	clear(tt.relabelled)
}

// world reads the suite's objects back from the apiserver for the oracle:
// what it judges is what the agents were given.
func (tt *truthTable) world(ctx context.Context) (*policytest.World, error) {
	w := policytest.NewWorld()
	for _, ns := range truthNamespaces {
		n, err := tt.cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		w.NS[ns] = n
		pods, err := tt.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		for i := range pods.Items {
			w.Pods[ns+"/"+pods.Items[i].Name] = &pods.Items[i]
		}
		pols, err := tt.cs.NetworkingV1().NetworkPolicies(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		for i := range pols.Items {
			w.Pols[ns+"/"+pols.Items[i].Name] = &pols.Items[i]
		}
	}
	return w, nil
}

// verdict is one probe's outcome.
type verdict uint8

const (
	allowed verdict = iota
	denied          // timed out: the packet was dropped
	failed          // any other error, or the wrong pod answered
)

func (v verdict) String() string { return [...]string{".", "X", "?"}[v] }

type matrix map[policytest.Probe]verdict

// check waits until the probed matrix equals the oracle's twice in a row
// (a transient state that happens to match must not pass a step), then
// compares `policy trace` with it. It reports failure with both tables.
func (tt *truthTable) check(t *testing.T, what string) bool {
	t.Helper()
	ctx := t.Context()
	w, err := tt.world(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := matrix{}
	for _, pr := range w.Matrix() {
		if slices.Contains(truthProtos, pr.Proto) {
			want[pr] = denied
			if w.Oracle(pr) {
				want[pr] = allowed
			}
		}
	}
	start := time.Now()
	var got matrix
	var errs map[policytest.Probe]error
	matched, rounds := 0, 0
	var late []string // what the first rounds that did not match differed in
	for deadline := start.Add(convergeWait); matched < 2; rounds++ {
		roundStart := time.Now()
		got, errs = tt.probe(want)
		if diff(want, got) == 0 {
			matched++
			continue
		}
		matched = 0
		if len(late) < 3 {
			late = append(late, fmt.Sprintf("a round of %.1fs: %s", time.Since(roundStart).Seconds(), firstDiffs(want, got, 12)))
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: the matrix did not converge within %s (%d rounds); %d of %d cells differ\n%s%s",
				what, convergeWait, rounds+1, diff(want, got), len(want), render(want, got), errorList(errs))
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
	took := time.Since(start)
	tt.step++
	ok := tt.checkTraces(t, what, got) && tt.checkTrace(t, what, got)
	t.Logf("%s: %d cells as expected after %.1fs (%d rounds), %d allowed; traces checked in %.1fs",
		what, len(want), took.Seconds(), rounds, count(got, allowed), (time.Since(start) - took).Seconds())
	for _, d := range late {
		t.Logf("  earlier, %s", d)
	}
	return ok
}

// firstDiffs names up to n differing cells and how many differ.
func firstDiffs(want, got matrix, n int) string {
	var cells []string
	for pr, v := range want {
		if got[pr] != v {
			cells = append(cells, fmt.Sprintf("%s->%s %s/%d got %s", pr.From, pr.To, pr.Proto, pr.Port, got[pr]))
		}
	}
	slices.Sort(cells)
	return fmt.Sprintf("%d cells (%s)", len(cells), strings.Join(cells[:min(n, len(cells))], ", "))
}

// checkTraces computes every cell's trace from a snapshot of the cluster
// with the code `fastpathctl policy trace` runs (policy.LoadCluster and
// Engine.TraceEnds): it must say what the packets did.
func (tt *truthTable) checkTraces(t *testing.T, what string, got matrix) bool {
	t.Helper()
	eng, err := policy.LoadCluster(t.Context(), tt.cs, tt.dyn)
	if err != nil {
		t.Fatal(err)
	}
	var wrong []string
	for pr, v := range got {
		tr, err := eng.TraceEnds(pr.From, pr.To, pr.Proto, pr.Port)
		if err != nil {
			t.Fatalf("%s: trace %v: %v", what, pr, err)
		}
		if tr.Allowed != (v == allowed) {
			wrong = append(wrong, fmt.Sprintf("  %s -> %s %s/%d: the packets said %s, the trace:\n%s", pr.From, pr.To, pr.Proto, pr.Port, v, tr))
		}
	}
	if len(wrong) > 0 {
		slices.Sort(wrong)
		t.Errorf("%s: policy trace disagrees with %d cells:\n%s", what, len(wrong), strings.Join(wrong, ""))
	}
	return len(wrong) == 0
}

func diff(want, got matrix) int {
	n := 0
	for pr, v := range want {
		if got[pr] != v {
			n++
		}
	}
	return n
}

func count(m matrix, v verdict) int {
	n := 0
	for _, x := range m {
		if x == v {
			n++
		}
	}
	return n
}

// probe sends every probe of want at once from inside the source pods:
// a TCP connect (the server greets with its name) or a UDP request and its
// echo, bounded by probeWait.
func (tt *truthTable) probe(want matrix) (matrix, map[policytest.Probe]error) {
	got, errs := matrix{}, map[policytest.Probe]error{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for pr := range want {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := tt.probeOne(pr)
			mu.Lock()
			defer mu.Unlock()
			got[pr] = v
			if v == failed {
				errs[pr] = err
			}
		}()
	}
	wg.Wait()
	return got, errs
}

func (tt *truthTable) probeOne(pr policytest.Probe) (verdict, error) {
	from, to := tt.nss[pr.From], tt.pods[pr.To]
	addr := net.JoinHostPort(to.ip.String(), fmt.Sprint(pr.Port))
	var name string
	var err error
	switch pr.Proto {
	case policy.TCP:
		name, err = nettopo.AskTCP(from, addr, probeWait)
	case policy.UDP:
		name, _, err = nettopo.AskUDPFrom(from, sourcePort(&udpSeq), addr, probeWait)
	default:
		name, err = tt.sctp[pr.From].ask(to.ip, pr.Port, sourcePort(&sctpSeq), probeWait)
	}
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return denied, err
	case err != nil:
		return failed, err
	case name != pr.To:
		return failed, fmt.Errorf("answered by %q", name)
	}
	return allowed, nil
}

// udpSeq and sctpSeq number the UDP and SCTP probes; see sourcePort.
var udpSeq, sctpSeq atomic.Uint32

// sourcePort gives each UDP or SCTP probe a source port of its own,
// cycling through 2000-31999 (below the kernel's ephemeral range, so never
// taken): a flow comes back only after 30,000 probes, 208 rounds of 144,
// well over the 60 s policy conntrack remembers it (a round with a denied
// cell lasts a probe timeout). A random port could repeat a flow allowed a
// step earlier and pass a cell that must now be denied.
func sourcePort(seq *atomic.Uint32) uint16 {
	return uint16(2000 + seq.Add(1)%30000)
}

// render prints the expected and observed tables side by side, one row per
// source pod, one cell per destination with a character per port
// (tcp/80 tcp/81 udp/80 udp/81 sctp/80 sctp/81): "." allowed, "X" denied, "?" failed
// otherwise; then the cells that differ.
func render(want, got matrix) string {
	pods := podsOf(want)
	var b strings.Builder
	fmt.Fprintf(&b, "cells: tcp/80 tcp/81 udp/80 udp/81 sctp/80 sctp/81 (. allowed, X denied, ? error); rows from, columns to\n")
	width := 2 * len(truthProtos)
	head := func() string {
		var h strings.Builder
		for _, to := range pods {
			fmt.Fprintf(&h, " %-*s", width, to)
		}
		return h.String()
	}
	fmt.Fprintf(&b, "%-6s%s   |%-6s%s\n", "want", head(), "got", head())
	for _, from := range pods {
		row := func(m matrix) string {
			var r strings.Builder
			for _, to := range pods {
				r.WriteByte(' ')
				if from == to {
					r.WriteString(strings.Repeat("-", width))
					continue
				}
				for _, proto := range truthProtos {
					for _, port := range []uint16{80, 81} {
						r.WriteString(m[policytest.Probe{From: from, To: to, Proto: proto, Port: port}].String())
					}
				}
			}
			return r.String()
		}
		fmt.Fprintf(&b, "%-6s%s   |%-6s%s\n", from, row(want), from, row(got))
	}
	for _, from := range pods {
		for _, to := range pods {
			for _, proto := range truthProtos {
				for _, port := range []uint16{80, 81} {
					pr := policytest.Probe{From: from, To: to, Proto: proto, Port: port}
					if w, ok := want[pr]; ok && got[pr] != w {
						fmt.Fprintf(&b, "  %s -> %s %s/%d: want %s, got %s\n", from, to, proto, port, w, got[pr])
					}
				}
			}
		}
	}
	return b.String()
}

func podsOf(m matrix) []string {
	var pods []string
	for pr := range m {
		if !slices.Contains(pods, pr.From) {
			pods = append(pods, pr.From)
		}
	}
	slices.Sort(pods)
	return pods
}

func errorList(errs map[policytest.Probe]error) string {
	var b strings.Builder
	for pr, err := range errs {
		fmt.Fprintf(&b, "  error %s -> %s %s/%d: %v\n", pr.From, pr.To, pr.Proto, pr.Port, err)
	}
	return b.String()
}

// checkTrace asks the `fastpathctl policy trace` command (run in the
// external client's namespace, where the apiserver is reachable) about two cells of
// the observed matrix, a denied one and an allowed one when there are,
// chosen differently at each step; its answer must be what the packets
// did.
func (tt *truthTable) checkTrace(t *testing.T, what string, got matrix) bool {
	t.Helper()
	var byVerdict [2][]policytest.Probe
	for pr, v := range got {
		if v != failed {
			byVerdict[v] = append(byVerdict[v], pr)
		}
	}
	ok := true
	for v, cells := range byVerdict {
		if len(cells) == 0 {
			continue
		}
		slices.SortFunc(cells, func(a, b policytest.Probe) int {
			return strings.Compare(fmt.Sprint(a), fmt.Sprint(b))
		})
		pr := cells[(tt.step*37)%len(cells)]
		tr, err := tt.trace(t.Context(), pr)
		if err != nil {
			t.Errorf("%s: policy trace %v: %v", what, pr, err)
			ok = false
			continue
		}
		if tr.Allowed != (verdict(v) == allowed) {
			t.Errorf("%s: policy trace says allowed=%v for %s -> %s %s/%d, the packets said %s", what, tr.Allowed,
				pr.From, pr.To, pr.Proto, pr.Port, verdict(v))
			ok = false
		}
	}
	return ok
}

func (tt *truthTable) trace(ctx context.Context, pr policytest.Probe) (policy.Verdict, error) {
	var v policy.Verdict
	ext, err := nettopo.OpenNS(extNSName())
	if err != nil {
		return v, err
	}
	defer ext.Release()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(tt.bin, "fastpathctl"), "-o", "json", "policy", "trace",
		"--kubeconfig", filepath.Join(StateDir, adminConfig),
		"--from", pr.From, "--to", pr.To, "--port", fmt.Sprintf("%d/%s", pr.Port, pr.Proto))
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	cmd.Env = append(os.Environ(), "KUBECONFIG=")
	if err := ext.Start(cmd); err != nil {
		return v, err
	}
	if err := cmd.Wait(); err != nil {
		return v, fmt.Errorf("%v: %s", err, stderr.String())
	}
	if err := json.Unmarshal(out.Bytes(), &v); err != nil {
		return v, fmt.Errorf("%v in %s", err, out.String())
	}
	return v, nil
}

// established: a TCP connection and a UDP flow allowed before a deny-all
// keep working after it (the policy judges new flows only; conntrack
// passes the rest until idle), while new connections are denied.
func (tt *truthTable) established(t *testing.T) {
	ctx := t.Context()
	if !tt.check(t, "established: no policy (after the last case's reset)") {
		return
	}
	xa := tt.pods["x/a"]
	client := tt.nss["x/b"] // on node2: across nodes
	sess, err := nettopo.OpenSession(client, net.JoinHostPort(xa.ip.String(), "80"), probeWait)
	if err != nil {
		t.Fatalf("x/b -> x/a:80 before the policy: %v", err)
	}
	defer sess.Close()
	var udp net.Conn
	err = client.Do(func() (err error) {
		udp, err = net.Dial("udp", net.JoinHostPort(xa.ip.String(), "81"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	ask := func(msg string) error {
		_ = udp.SetDeadline(time.Now().Add(probeWait))
		if _, err := udp.Write([]byte(msg)); err != nil {
			return err
		}
		buf := make([]byte, 256)
		n, err := udp.Read(buf)
		if err == nil && string(buf[:n]) != "x/a "+msg {
			err = fmt.Errorf("answer %q", buf[:n])
		}
		return err
	}
	if err := ask("before"); err != nil {
		t.Fatalf("x/b -> x/a:81/udp before the policy: %v", err)
	}
	err = tt.apply(ctx, []byte(`
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: "x", name: deny-ingress}
spec:
  podSelector: {}
  policyTypes: [Ingress]
`))
	if err != nil {
		t.Fatal(err)
	}
	if !tt.check(t, "established: deny-all ingress in x") {
		return
	}
	if err := sess.Ping("after", probeWait); err != nil {
		t.Errorf("the TCP connection established before the deny-all: %v", err)
	}
	if err := ask("after"); err != nil {
		t.Errorf("the UDP flow established before the deny-all: %v", err)
	}
}
