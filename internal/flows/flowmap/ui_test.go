package flowmap_test

import (
	"bytes"
	"context"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/fastpath-net/fastpath/internal/datapath"
	"github.com/fastpath-net/fastpath/internal/datapath/policymap"
	"github.com/fastpath-net/fastpath/internal/flows"
	"github.com/fastpath-net/fastpath/internal/flows/flowmap"
	"github.com/fastpath-net/fastpath/internal/identity"
	"github.com/fastpath-net/fastpath/internal/loadbalancer"
	"github.com/fastpath-net/fastpath/internal/nettopo"
	"github.com/fastpath-net/fastpath/internal/policy"
	"github.com/fastpath-net/fastpath/internal/testpriv"
)

// A pod of the test: its netns host, Kubernetes names and identity.
type testPod struct {
	h        *nettopo.Host
	ns, name string
	id       identity.ID
	ep       uint16
}

// names resolves like the agent does, from the test's pods and the real
// service table and fp_rev_nat.
type names struct {
	pods  []testPod
	d     *datapath.Datapath
	table *loadbalancer.Table
}

func (n *names) Pod(ip netip.Addr) (string, string) {
	for _, p := range n.pods {
		if p.h.Addr == ip {
			return p.ns, p.name
		}
	}
	return "", ""
}

func (n *names) Identity(id identity.ID) (string, []string, string) {
	for _, p := range n.pods {
		if p.id == id {
			return p.ns, []string{"app=" + p.name}, ""
		}
	}
	return "", nil, ""
}

func (n *names) Service(rev uint32, proto uint8) string {
	fe, ok, err := n.d.LB.RevNat.Lookup(rev)
	if err != nil || !ok {
		return ""
	}
	if name, ok := n.table.FrontendOwner(fe.Addr.IP(), fe.Port, proto); ok {
		return name.String() + " (" + netip.AddrPortFrom(fe.Addr.IP(), fe.Port).String() + ")"
	}
	return ""
}

func (n *names) Explain(string, string, policy.Direction, identity.ID, policy.Proto, uint16) string {
	return ""
}

// The flow map page in headless Chromium, fed by real flows: pods in fp-
// namespaces behind tc_lb and tc_policy, web's ingress allowing only cli on
// TCP/80, a Service without backends. The page must show the allowed, the
// dropped (policy and no-backend) and an L7-denied edge, and its namespace
// filter must leave only that namespace's edges. A screenshot goes to
// $FASTPATH_ARTIFACTS (default _output/artifacts, git-ignored).
func TestFlowMapInChromium(t *testing.T) {
	testpriv.Require(t)
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		testpriv.Unavailable(t, "no chromium in PATH (hack/install-deps.sh installs Debian's)")
	}
	pin, err := os.MkdirTemp("/sys/fs/bpf", "fp-test-flowmap-")
	if err != nil {
		testpriv.Unavailable(t, "no bpffs at /sys/fs/bpf: "+err.Error())
	}
	t.Cleanup(func() {
		if err := datapath.Uninstall(pin); err != nil {
			t.Errorf("uninstall: %v", err)
		}
	})
	star, err := nettopo.NewStar("fmap", "web", "cli", "job")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { star.Close() })
	d, err := datapath.Load(datapath.Config{PinDir: pin, Policy: true, Sizes: datapath.Sizes{CT: 1024}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })

	web := testPod{star.Hosts[0], "fp-shop", "web", 1000, 1}
	cli := testPod{star.Hosts[1], "fp-shop", "cli", 2000, 2}
	job := testPod{star.Hosts[2], "fp-batch", "job", 3000, 3}
	m := d.Policy().Maps()
	keys := []policymap.IPCacheKey{policymap.IPCacheKeyOf(netip.MustParsePrefix("0.0.0.0/0"))}
	vals := []policymap.IPCacheValue{{Identity: uint32(identity.WorldIPv4)}}
	for _, p := range []testPod{web, cli, job} {
		ifc := datapath.Iface{NetNS: star.Node.Path(), Name: p.h.NodeIf}
		mode, err := d.AttachTCRole(ifc, datapath.RoleInternal)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.AttachPolicy(ifc, mode); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.DetachTC(ifc) })
		idx, err := star.Node.Ifindex(p.h.NodeIf)
		if err != nil {
			t.Fatal(err)
		}
		ep := policymap.Endpoint{ID: p.ep, Identity: uint32(p.id)}
		if p.name == "web" {
			ep.Flags = policymap.EnforceIngress
		}
		if err := m.Endpoints.Update([]uint32{uint32(idx)}, []policymap.Endpoint{ep}); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, policymap.IPCacheKeyOf(netip.PrefixFrom(p.h.Addr, 32)))
		vals = append(vals, policymap.IPCacheValue{Identity: uint32(p.id)})
	}
	if err := m.IPCache.Update(keys, vals); err != nil {
		t.Fatal(err)
	}
	pk := policymap.PolicyKeys(web.ep, policy.Key{Identity: cli.id, Dir: policy.Ingress, Proto: policy.TCP, Port: 80, EndPort: 80})
	if err := m.Policy.Update(pk, make([]policymap.PolicyValue, len(pk))); err != nil {
		t.Fatal(err)
	}
	// Every allowed new flow and every drop recorded.
	if err := d.VerdictConfig().Update([]uint32{0}, []policymap.PolicyConfig{{AllowSample: 1}}); err != nil {
		t.Fatal(err)
	}
	table := loadbalancer.NewTable()
	empty, webVIP := netip.MustParseAddrPort("10.96.0.20:80"), netip.MustParseAddrPort("10.96.0.21:80")
	for _, s := range []struct {
		name     string
		vip      netip.AddrPort
		backends []loadbalancer.Backend
	}{
		{"empty", empty, nil},
		{"web", webVIP, []loadbalancer.Backend{{L4Addr: loadbalancer.L4Addr{Addr: web.h.Addr, Port: 80, Proto: loadbalancer.TCP}}}},
	} {
		if err := table.Upsert(loadbalancer.Service{Name: loadbalancer.ServiceName{Namespace: "fp-shop", Name: s.name},
			Frontends: []loadbalancer.FrontendSpec{{Frontend: loadbalancer.Frontend{L4Addr: loadbalancer.L4Addr{Addr: s.vip.Addr(), Port: s.vip.Port(), Proto: loadbalancer.TCP}}, Backends: s.backends}},
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := loadbalancer.NewReconciler(d.LB, loadbalancer.ReconcilerOptions{}).Sync(table); err != nil {
		t.Fatal(err)
	}

	// The agent's pipeline: ring -> named events -> hub -> map.
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	hub := flows.NewHub()
	fm := flowmap.New(time.Hour, 1000)
	go fm.Run(ctx, hub)
	r, err := ringbuf.NewReader(d.Verdicts())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	nm := &names{pods: []testPod{web, cli, job}, d: d, table: table}
	go policymap.Stream(ctx, r, policymap.Filter{}, 0, func(v policymap.Verdict) error {
		hub.Publish(flows.FromVerdict(v, v.WallTime(), nm))
		return nil
	})

	ln, err := web.h.NS.Listen("tcp4", ":80")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	dial := func(p testPod, to netip.AddrPort) error {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		c, err := p.h.NS.DialContext(ctx, "tcp4", to.String())
		if err == nil {
			c.Close()
		}
		return err
	}
	webDirect := netip.AddrPortFrom(web.h.Addr, 80)
	for _, to := range []netip.AddrPort{webDirect, webDirect, webVIP} {
		if err := dial(cli, to); err != nil {
			t.Fatalf("cli -> %s: %v; want allowed", to, err)
		}
	}
	if err := dial(job, webDirect); err == nil {
		t.Fatal("job -> web connected; want the policy to drop it")
	}
	if err := dial(job, empty); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("job -> %s: %v; want refused (no backend)", empty, err)
	}
	// The L7 proxy is not part of this datapath: its event is published
	// as the proxy publishes it, to show the third colour.
	hub.Publish(flows.Event{Type: flows.TypeL7, Verdict: flows.VerdictDenied, Proto: "TCP", Reason: "policy-l7-denied",
		Source:      flows.Endpoint{IP: cli.h.Addr.String(), Namespace: "fp-shop", Pod: "cli", Labels: []string{"app=cli"}},
		Destination: flows.Endpoint{IP: web.h.Addr.String(), Port: 80, Namespace: "fp-shop", Pod: "web", Labels: []string{"app=web"}},
		L7:          &flows.L7{Protocol: "http", Method: "GET", Path: "/admin"}, Summary: "l7 denied: GET /admin"})

	want := []string{
		"fp-batch/job>fp-shop/web:dropped",
		"fp-batch/job>svc:fp-shop/empty:dropped",
		"fp-shop/cli>fp-shop/web:allowed",
		"fp-shop/cli>fp-shop/web:denied",
	}
	deadline := time.Now().Add(5 * time.Second)
	for !slices.Equal(edgesOf(fm.Snapshot("")), want) {
		if time.Now().After(deadline) {
			t.Fatalf("map edges %v, want %v", edgesOf(fm.Snapshot("")), want)
		}
		time.Sleep(50 * time.Millisecond)
	}

	srv := httptest.NewServer(fm.Handler())
	defer srv.Close()
	if got := pageEdges(t, chromium, srv.URL+"/flows/", "--dump-dom"); !slices.Equal(got, want) {
		t.Errorf("page shows edges %v, want %v", got, want)
	}
	if got, want := pageEdges(t, chromium, srv.URL+"/flows/?namespace=fp-batch", "--dump-dom"), want[:2]; !slices.Equal(got, want) {
		t.Errorf("page filtered to fp-batch shows %v, want %v", got, want)
	}
	shot := filepath.Join(artifacts(t), "flowmap.png")
	pageEdges(t, chromium, srv.URL+"/flows/", "--screenshot="+shot, "--window-size=1280,720")
	png, err := os.ReadFile(shot)
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatalf("screenshot %s: %v (%d bytes)", shot, err, len(png))
	}
	t.Logf("screenshot: %s", shot)
}

func edgesOf(g flowmap.Graph) []string {
	var out []string
	for _, e := range g.Edges {
		out = append(out, e.Source+">"+e.Target+":"+string(e.Verdict))
	}
	return out
}

var edgeTag = regexp.MustCompile(`<g class="edge" data-source="([^"]*)" data-target="([^"]*)" data-verdict="([^"]*)" data-count="(\d+)"`)

// pageEdges loads url in headless Chromium with args (--dump-dom or
// --screenshot) and returns the edges the DOM shows. Virtual time lets
// the page's fetch finish before the DOM is dumped, without a sleep.
func pageEdges(t *testing.T, chromium, url string, args ...string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
		"--user-data-dir=" + t.TempDir(), "--virtual-time-budget=5000"}
	cmd := exec.CommandContext(ctx, chromium, append(append(base, args...), url)...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, stderr.String())
	}
	if !strings.Contains(args[0], "dump-dom") {
		return nil
	}
	if !strings.Contains(out.String(), `data-loaded="true"`) {
		t.Fatalf("the page did not load its data:\n%s", out.String())
	}
	var edges []string
	for _, m := range edgeTag.FindAllStringSubmatch(out.String(), -1) {
		edges = append(edges, m[1]+">"+m[2]+":"+m[3])
	}
	return edges
}

// artifacts is where test artifacts go: $FASTPATH_ARTIFACTS, else
// _output/artifacts at the module root (git-ignored).
func artifacts(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("FASTPATH_ARTIFACTS")
	if dir == "" {
		root, err := os.Getwd()
		if err != nil {
			t.Fatal(err)
		}
		for {
			if _, err := os.Stat(filepath.Join(root, "go.mod")); err == nil {
				break
			}
			parent := filepath.Dir(root)
			if parent == root {
				t.Fatal("no go.mod above the test's directory")
			}
			root = parent
		}
		dir = filepath.Join(root, "_output", "artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}
