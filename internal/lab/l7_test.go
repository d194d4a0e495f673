package lab

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/fastpath-net/fastpath/internal/flows"
	"github.com/fastpath-net/fastpath/internal/fpnetpol"
	"github.com/fastpath-net/fastpath/internal/nettopo"
)

// webL7 protects the web pods' HTTP port: clients may GET /public/* and
// /private with the right X-Token and GET api.example/v1/*; GET
// /public/secret is denied although /public/* allows it.
const webL7 = `
endpointSelector: {matchLabels: {app: web}}
ingress:
- fromEndpoints: [{matchLabels: {app: client}}]
  toPorts:
  - ports: [{port: 8000}]
    rules:
      http:
      - {method: GET, path: "/public(/.*)?"}
      - {path: "/private", headers: [{name: X-Token, value: s3cret}]}
      - {method: GET, host: "api\\.example", path: "/v1/.*"}
      httpDeny:
      - {path: "/public/secret"}
`

// l7Checks runs FastpathNetworkPolicy HTTP rules in the running lab with
// real clients (curl, HTTP/1.1 and h2c with prior knowledge, and Go's):
// the web pods' ingress, from the client on node 1 to web-2 (same node)
// and web-1 (node 2: the redirect happens at node 2's uplink), the
// denies as L7 edges of each node's flow map, a restart of node 1's agent, and
// an egress rule through a Service.
func l7Checks(t *testing.T, st *State, opts Options) {
	t.Helper()
	ctx := t.Context()
	cs := mustClient(t)
	pods, err := podsWithIPs(ctx, cs, opts.Nodes)
	if err != nil {
		t.Fatal(err)
	}
	dyn := mustDynamic(t)
	createFNP(t, dyn, "web-l7", webL7)
	t.Cleanup(func() {
		_ = dyn.Resource(fpnetpol.PolicyGVR).Namespace(namespace).Delete(context.Background(), "web-l7", metav1.DeleteOptions{})
	})
	client := openPodNS(t, "client")
	for _, web := range []string{"web-2", "web-1"} {
		base := fmt.Sprintf("http://%s:%d", findPod(pods, web).ip, webHTTPPort)
		what := func(s string) string { return web + ": " + s }
		// The policy reaches the agents: POST /admin turns into a 403.
		waitCurl(t, client, what("POST /admin denied"), 403, "-X", "POST", base+"/admin")
		curlWant(t, client, what("GET /public"), 200, "hello from "+web, base+"/public")
		curlWant(t, client, what("POST /admin"), 403, "Access denied", "-X", "POST", base+"/admin")
		curlWant(t, client, what("GET /public/secret (deny over allow)"), 403, "Access denied", base+"/public/secret")
		curlWant(t, client, what("GET /private without token"), 403, "Access denied", base+"/private")
		curlWant(t, client, what("POST /private with X-Token"), 200, "hello from", "-X", "POST", "-H", "X-Token: s3cret", base+"/private")
		curlWant(t, client, what("GET /v1/x with Host api.example"), 200, "hello from", "-H", "Host: api.example", base+"/v1/x")
		curlWant(t, client, what("GET /v1/x with Host other.example"), 403, "Access denied", "-H", "Host: other.example", base+"/v1/x")
		curlWant(t, client, what("h2c GET /public"), 200, "hello from "+web, "--http2-prior-knowledge", base+"/public")
		curlWant(t, client, what("h2c POST /admin"), 403, "Access denied", "--http2-prior-knowledge", "-X", "POST", base+"/admin")
		keepAliveDenied(t, client, net.JoinHostPort(findPod(pods, web).ip.String(), fmt.Sprint(webHTTPPort)), what("keep-alive"))
		goClient(t, client, base, what("Go client"))
	}
	// A 100 MB body streams through each node's proxy: web-2's ingress
	// is judged at node 1 (the client's veth), web-1's at node 2's uplink.
	for _, c := range []struct {
		web  string
		node int
	}{{"web-2", 1}, {"web-1", 2}} {
		bigBodyThroughProxy(t, client, st.Processes["agent-"+nodeName(c.node)],
			fmt.Sprintf("http://%s:%d/private", findPod(pods, c.web).ip, webHTTPPort), c.web+": 100 MB body")
	}
	// The proxies' access logs reach each node's flow stream: the denied
	// requests are L7-denied edges of its flow map.
	for _, node := range []int{1, 2} {
		flowMapHasEdge(t, node, "default/client", "default/web", flows.VerdictDenied)
	}
	// Node 1's agent restarts: its proxy goes with it; new connections
	// work again once the next agent listens (clients retransmit their
	// SYNs meanwhile), with the same rules.
	web2 := fmt.Sprintf("http://%s:%d", findPod(pods, "web-2").ip, webHTTPPort)
	stopped := time.Now()
	if err := stop(st.Processes["agent-"+nodeName(1)]); err != nil {
		t.Fatal(err)
	}
	if err := startAgent(opts, st, 1); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	waitCurl(t, client, "after the agent's restart: GET /public", 200, web2+"/public")
	t.Logf("l7: agent stopped and started in %v; the next request was answered %v later", started.Sub(stopped).Round(time.Millisecond),
		time.Since(started).Round(time.Millisecond))
	curlWant(t, client, "after the agent's restart: POST /admin", 403, "Access denied", "-X", "POST", web2+"/admin")
	// Gone, the web pods are open again (the next checks need them).
	if err := dyn.Resource(fpnetpol.PolicyGVR).Namespace(namespace).Delete(ctx, "web-l7", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitCurl(t, client, "policy deleted: POST /admin", 200, "-X", "POST", fmt.Sprintf("http://%s:%d/admin", findPod(pods, "web-1").ip, webHTTPPort))
	hostL7(t, dyn, findPod(pods, "web-2").ip)
	serviceEgress(t, dyn, client, findPod(pods, "web-2").ip, findPod(pods, "web-1").ip)
}

// clientEgressL7 lets the client only GET api.example/v1/* from the web
// pods (their port 8000, which the Service web maps port 80 to).
const clientEgressL7 = `
endpointSelector: {matchLabels: {app: client}}
egress:
- toEndpoints: [{matchLabels: {app: web}}]
  toPorts:
  - ports: [{port: 8000}]
    rules:
      http:
      - {method: GET, host: "api\\.example", path: "/v1/.*"}
`

// serviceEgress: an egress rule through the Service's ClusterIP: the
// client's connection to the VIP is balanced to a backend by tc_lb, judged
// by the client's egress entry for that backend, and answered by the proxy
// as the VIP.
func serviceEgress(t *testing.T, dyn dynamic.Interface, client *nettopo.NS, web2, web1 netip.Addr) {
	t.Helper()
	svc, err := mustClient(t).CoreV1().Services(namespace).Get(t.Context(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + svc.Spec.ClusterIP
	createFNP(t, dyn, "client-egress", clientEgressL7)
	waitCurl(t, client, "service: POST /v1/x denied", 403, "-X", "POST", "-H", "Host: api.example", base+"/v1/x")
	for i := 0; i < 4; i++ { // both backends' nodes, likely
		curlWant(t, client, "service: GET api.example/v1/x", 200, "hello from web-", "-H", "Host: api.example", base+"/v1/x")
	}
	curlWant(t, client, "service: GET api.example/v2/x", 403, "Access denied", "-H", "Host: api.example", base+"/v2/x")
	curlWant(t, client, "service: GET other.example/v1/x", 403, "Access denied", "-H", "Host: other.example", base+"/v1/x")
	curlWant(t, client, "service: h2c GET api.example/v1/x", 200, "hello from web-", "--http2-prior-knowledge", "-H", "Host: api.example", base+"/v1/x")
	tupleClash(t, client, web2)
	egressAcrossNodes(t, client, web1)
	if err := dyn.Resource(fpnetpol.PolicyGVR).Namespace(namespace).Delete(t.Context(), "client-egress", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitCurl(t, client, "service: policy deleted", 200, "-X", "POST", base+"/v1/x")
}

func mustDynamic(t *testing.T) dynamic.Interface {
	t.Helper()
	cfg, ext, err := restConfig()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ext.Release)
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return dyn
}

func createFNP(t *testing.T, dyn dynamic.Interface, name, spec string) {
	t.Helper()
	var s map[string]any
	if err := yaml.Unmarshal([]byte(spec), &s); err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "fastpath.io/v1alpha1", "kind": "FastpathNetworkPolicy",
		"metadata": map[string]any{"name": name, "namespace": namespace}, "spec": s,
	}}
	if _, err := dyn.Resource(fpnetpol.PolicyGVR).Namespace(namespace).Create(t.Context(), u, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// curl runs curl inside ns and returns the status and body.
func curl(ns *nettopo.NS, args ...string) (int, string, error) {
	out, err := os.CreateTemp("", "fp-curl-")
	if err != nil {
		return 0, "", err
	}
	defer os.Remove(out.Name())
	defer out.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	full := append([]string{"-sS", "--max-time", "3", "-o", out.Name(), "-w", "%{http_code}"}, args...)
	cmd := exec.CommandContext(ctx, "curl", full...)
	var code strings.Builder
	cmd.Stdout, cmd.Stderr = &code, &code
	if err := ns.Start(cmd); err != nil {
		return 0, "", err
	}
	if err := cmd.Wait(); err != nil {
		return 0, "", fmt.Errorf("curl %v: %v: %s", args, err, code.String())
	}
	body, _ := io.ReadAll(out)
	var status int
	fmt.Sscan(code.String(), &status)
	return status, string(body), nil
}

func curlWant(t *testing.T, ns *nettopo.NS, what string, status int, body string, args ...string) {
	t.Helper()
	got, b, err := curl(ns, args...)
	if err != nil || got != status || !strings.Contains(b, body) {
		t.Errorf("%s: curl status %d body %q err %v; want %d with %q", what, got, b, err, status, body)
	}
}

// waitCurl waits up to 20 s for a status (a policy takes a moment to reach
// the agents).
func waitCurl(t *testing.T, ns *nettopo.NS, what string, status int, args ...string) {
	t.Helper()
	var got int
	var err error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if got, _, err = curl(ns, args...); err == nil && got == status {
			return
		}
	}
	t.Fatalf("%s: status %d (err %v), want %d\n%s", what, got, err, status, logs())
}

// keepAliveDenied: on one HTTP/1.1 connection, an allowed request and then
// a denied one (the proxy judges each request).
func keepAliveDenied(t *testing.T, ns *nettopo.NS, addr, what string) {
	t.Helper()
	var c net.Conn
	if err := ns.Do(func() (err error) { c, err = net.DialTimeout("tcp", addr, probeTimeout); return err }); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	for i, req := range []struct {
		line string
		want int
	}{{"GET /public HTTP/1.1", 200}, {"POST /admin HTTP/1.1", 403}, {"GET /public/x HTTP/1.1", 200}} {
		if _, err := fmt.Fprintf(c, "%s\r\nHost: web\r\nContent-Length: 0\r\n\r\n", req.line); err != nil {
			t.Fatalf("%s: request %d: %v", what, i, err)
		}
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatalf("%s: request %d (%s): %v", what, i, req.line, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != req.want {
			t.Errorf("%s: request %d (%s): %s, want %d", what, i, req.line, resp.Status, req.want)
		}
	}
}

// goClient: net/http with keep-alive through a dialer inside the pod.
func goClient(t *testing.T, ns *nettopo.NS, base, what string) {
	t.Helper()
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, DialContext: ns.DialContext}}
	defer hc.CloseIdleConnections()
	for _, c := range []struct {
		method, path string
		want         int
	}{{"GET", "/public/a", 200}, {"DELETE", "/public/a", 403}, {"GET", "/public/b", 200}} {
		req, _ := http.NewRequest(c.method, base+c.path, nil)
		resp, err := hc.Do(req)
		if err != nil {
			t.Errorf("%s: %s %s: %v", what, c.method, c.path, err)
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s: %s %s: %s, want %d", what, c.method, c.path, resp.Status, c.want)
		}
	}
}
