package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/fastpath-net/fastpath/internal/metrics"
	"github.com/fastpath-net/fastpath/internal/nettopo"
	"github.com/fastpath-net/fastpath/internal/testenv"
)

// TestMetricsAndHealthFollowAServiceChange runs the real agent against a
// real apiserver and reads its /metrics, /healthz and a healthCheckNodePort
// the way Prometheus, the kubelet and a cloud load balancer would: over
// HTTP, inside the node namespace where the agent must have opened them.
// Every value checked must move with a real Service change.
func TestMetricsAndHealthFollowAServiceChange(t *testing.T) {
	l, cs := newKubeLab(t, "be1", "be2")
	l.extra = []string{"--pprof-addr", "127.0.0.1:6060", "--ct-gc-interval", "100ms"}
	l.startAgent()
	node := l.star.Node
	before := waitScrape(t, node, `fastpath_frontends_programmed`, func(v float64) bool { return v >= 1 }) // the kubernetes Service, synced

	// A Service and a slice whose trigger time is now, as the
	// EndpointSlice controller would write it.
	svc := createOpsService(t, cs, "web", nil)
	slice := webSlice(l.backendAddr("be1"), l.backendAddr("be2"))
	slice.Annotations = map[string]string{corev1.EndpointsLastChangeTriggerTime: time.Now().UTC().Format(time.RFC3339Nano)}
	if _, err := cs.DiscoveryV1().EndpointSlices(k8sNS).Create(t.Context(), slice, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	l.waitBackends(svc.Spec.ClusterIP+":80/TCP", l.backendAddr("be1")+":8080", l.backendAddr("be2")+":8080")
	askVIP(t, l.client(), svc.Spec.ClusterIP+":80", 10)
	after := waitScrape(t, node, `fastpath_network_programming_duration_seconds_count{ip_family="IPv4"}`,
		func(v float64) bool {
			return v > before[`fastpath_network_programming_duration_seconds_count{ip_family="IPv4"}`]
		})

	for _, c := range []struct {
		series string
		delta  float64 // exact change; 0: must grow
	}{
		{`fastpath_services_programmed`, 1},
		{`fastpath_backends_programmed`, 2},
		{`fastpath_frontends_programmed`, 1},
		{`fastpath_network_programming_duration_seconds_count{ip_family="IPv4"}`, 1},
		{`fastpath_sync_duration_seconds_count{mode="partial"}`, 0},
		{`fastpath_bpf_map_entries{map="fp_backends"}`, 2},
		{`fastpath_bpf_map_entries{map="fp_ct"}`, 0},
		{`fastpath_datapath_packets_total{outcome="forward_new"}`, 10},
		{`fastpath_datapath_packets_total{outcome="reply_revnat"}`, 0},
		{`fastpath_datapath_forwarded_packets_total{direction="original"}`, 0},
		{`fastpath_datapath_forwarded_packets_total{direction="reply"}`, 0},
		{`fastpath_datapath_forwarded_bytes_total{direction="original"}`, 0},
		{`fastpath_datapath_forwarded_bytes_total{direction="reply"}`, 0},
	} {
		b, okB := before[c.series]
		a, okA := after[c.series]
		switch {
		case !okB || !okA:
			t.Errorf("%s missing from /metrics (before: %v, after: %v)", c.series, okB, okA)
		case c.delta == 0 && a <= b:
			t.Errorf("%s: %v before the Service, %v after; want it to grow", c.series, b, a)
		case c.delta != 0 && a-b != c.delta:
			t.Errorf("%s: %v before the Service, %v after; want +%v", c.series, b, a, c.delta)
		}
	}
	for _, series := range []string{
		`fastpath_bpf_map_memory_bytes{map="fp_ct"}`, `fastpath_bpf_map_max_entries{map="fp_ct"}`,
		`fastpath_bpf_map_fill_ratio{map="fp_services"}`, `fastpath_datapath_drops_total{reason="no_backend"}`,
		`fastpath_sync_errors_total{mode="partial"}`, `fastpath_network_programming_duration_seconds_bucket{ip_family="IPv4",le="0.25"}`,
		`fastpath_conntrack_gc_deleted_total`, `fastpath_conntrack_gc_errors_total`,
		`fastpath_conntrack_full`, `fastpath_conntrack_full_walks_total`, `process_resident_memory_bytes`,
	} {
		if _, ok := after[series]; !ok {
			t.Errorf("%s missing from /metrics", series)
		}
	}
	if n := after["fastpath_bpf_map_read_errors"]; n != 0 {
		t.Errorf("fastpath_bpf_map_read_errors %v: every pinned map must be readable", n)
	}
	// GC walks every 100ms (--ct-gc-interval): the count grows, scrape after scrape.
	gc := `fastpath_conntrack_gc_duration_seconds_count`
	waitScrape(t, node, gc, func(v float64) bool { return v > after[gc] })
	if sum := after[`fastpath_network_programming_duration_seconds_sum{ip_family="IPv4"}`]; sum <= 0 {
		t.Errorf("programming latency sum %v; want the time from the trigger to the map update", sum)
	}

	checkProxyHealth(t, node)
	checkHealthCheckNodePort(t, l, cs, node)
	if code, _, body := get(t, node, "http://127.0.0.1:6060/debug/pprof/cmdline"); code != http.StatusOK || !strings.Contains(body, "fastpath-agent") {
		t.Errorf("--pprof-addr: /debug/pprof/cmdline answered %d %q", code, body)
	}
	checkNoRootListener(t, l.agent.Process.Pid)
}

// checkNoRootListener fails when the agent holds a listening TCP socket of
// the root namespace (the test's own): every listener belongs in --netns.
func checkNoRootListener(t *testing.T, pid int) {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if inode, ok := strings.CutPrefix(target, "socket:["); err == nil && ok {
			inodes[strings.TrimSuffix(inode, "]")] = true
		}
	}
	if len(inodes) == 0 {
		t.Fatal("the agent holds no sockets at all; the check would prove nothing")
	}
	// This thread's tables: /proc/self/net is the main thread's namespace,
	// which the runtime leaves wherever a locked goroutine that entered a
	// namespace on it ended (nettopo.NS.Do never returns its threads).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for _, table := range []string{"/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"} {
		data, err := os.ReadFile(table)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(line)
			// sl local rem st ... inode is the 10th field; 0A is LISTEN.
			if len(f) > 9 && f[3] == "0A" && inodes[f[9]] {
				t.Errorf("the agent listens in the root namespace: %s %s", table, line)
			}
		}
	}
}

// checkProxyHealth: /healthz and /livez answer 200 with kube-proxy's JSON.
func checkProxyHealth(t *testing.T, node *nettopo.NS) {
	t.Helper()
	for _, path := range []string{"/healthz", "/livez"} {
		code, hdr, body := get(t, node, "http://127.0.0.1:10256"+path)
		var st struct {
			NodeEligible *bool
			Healthy      bool
			Status       map[string]struct{ Healthy bool }
		}
		if err := json.Unmarshal([]byte(body), &st); err != nil {
			t.Fatalf("%s: %v in %q", path, err, body)
		}
		if code != http.StatusOK || !st.Healthy || !st.Status["IPv4"].Healthy || hdr.Get("Content-Type") != "application/json" {
			t.Errorf("%s: %d %v %s; want 200, healthy, application/json", path, code, hdr, body)
		}
		if eligible := st.NodeEligible != nil && *st.NodeEligible; eligible != (path == "/healthz") {
			t.Errorf("%s: nodeEligible %v in %s; /healthz says true for an existing Node, /livez leaves it out", path, st.NodeEligible, body)
		}
	}
}

// checkHealthCheckNodePort: a LoadBalancer Service with
// externalTrafficPolicy Local gets its health-check port, which answers
// 200 with one local ready endpoint, 503 with none, and closes with the
// Service.
func checkHealthCheckNodePort(t *testing.T, l *lab, cs kubernetes.Interface, node *nettopo.NS) {
	t.Helper()
	svc := createOpsService(t, cs, "lb", localLB(0))
	url := fmt.Sprintf("http://127.0.0.1:%d/", svc.Spec.HealthCheckNodePort)
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "lb-1", Namespace: k8sNS, Labels: map[string]string{discoveryv1.LabelServiceName: "lb"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{l.backendAddr("be1")}, NodeName: ptr.To(l.kube.nodeName), Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}},
			{Addresses: []string{l.backendAddr("be2")}, NodeName: ptr.To("another-node"), Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}},
		},
	}
	s, err := cs.DiscoveryV1().EndpointSlices(k8sNS).Create(t.Context(), s, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := func(code int, local int) {
		t.Helper()
		body := fmt.Sprintf("{\n\t\"service\": {\n\t\t\"namespace\": %q,\n\t\t\"name\": \"lb\"\n\t},\n\t\"localEndpoints\": %d,\n\t\"serviceProxyHealthy\": true\n}", k8sNS, local)
		var last string
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			c, hdr, b, err := tryGet(node, url)
			if err == nil && c == code && b == body && hdr.Get("X-Load-Balancing-Endpoint-Weight") == strconv.Itoa(local) {
				return
			}
			last = fmt.Sprintf("%d %v %q (err %v)", c, hdr, b, err)
		}
		t.Fatalf("health check %s: %s; want %d with localEndpoints %d\nagent log:\n%s", url, last, code, local, l.agentLog)
	}
	want(http.StatusOK, 1)
	s.Endpoints[0].Conditions = discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(true), Terminating: ptr.To(true)}
	if _, err := cs.DiscoveryV1().EndpointSlices(k8sNS).Update(t.Context(), s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	want(http.StatusServiceUnavailable, 0)
	if err := cs.CoreV1().Services(k8sNS).Delete(t.Context(), "lb", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, _, _, err := tryGet(node, url); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("health check %s still answers after the Service was deleted", url)
		}
	}
}

// metricSet maps a series (name{labels} as exposed) to its value.
type metricSet map[string]float64

func scrapeMetrics(t *testing.T, node *nettopo.NS) metricSet {
	t.Helper()
	code, _, body := get(t, node, "http://127.0.0.1:10249/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}
	out, err := metrics.ParseText(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// waitScrape scrapes until series satisfies ok (10s at most) and returns
// that scrape.
func waitScrape(t *testing.T, node *nettopo.NS, series string, ok func(float64) bool) metricSet {
	t.Helper()
	var last metricSet
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if _, _, _, err := tryGet(node, "http://127.0.0.1:10249/metrics"); err != nil {
			continue // not listening yet
		}
		last = scrapeMetrics(t, node)
		if v, found := last[series]; found && ok(v) {
			return last
		}
	}
	t.Fatalf("%s never reached the expected value; last %v", series, last[series])
	return nil
}

func get(t *testing.T, node *nettopo.NS, url string) (int, http.Header, string) {
	t.Helper()
	code, hdr, body, err := tryGet(node, url)
	if err != nil {
		t.Fatalf("GET %s from the node namespace: %v", url, err)
	}
	return code, hdr, body
}

func tryGet(node *nettopo.NS, url string) (int, http.Header, string, error) {
	resp, err := node.HTTPClient(timeout).Get(url)
	if err != nil {
		return 0, nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b), err
}

// TestFullServiceMapIsEventedOnTheService: with a service map too small
// for every Service, the real agent programs what fits and puts a Warning
// Event naming the full map on the Service that did not fit; /metrics
// counts the failed syncs and the pending frontends, and /healthz and
// /livez fail once the change has waited longer than --healthz-timeout.
func TestFullServiceMapIsEventedOnTheService(t *testing.T) {
	l, cs := newKubeLab(t, "be1", "be2")
	// The kubernetes Service takes 2 entries (frontend, one backend slot);
	// web with two backends needs 3 more.
	l.extra = []string{"--services-max", "4", "--healthz-timeout", "1s"}
	l.startAgent()
	createOpsService(t, cs, "web", nil)
	if _, err := cs.DiscoveryV1().EndpointSlices(k8sNS).Create(t.Context(), webSlice(l.backendAddr("be1"), l.backendAddr("be2")), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, l, cs, "a FastpathCannotProgram Warning on web naming the full map", func(e corev1.Event) bool {
		return e.Reason == "FastpathCannotProgram" && e.InvolvedObject.Name == "web" &&
			strings.Contains(e.Message, "map is full") && strings.Contains(e.Message, "service fp-e2e/web")
	})
	m := waitScrape(t, l.star.Node, `fastpath_frontends_pending`, func(v float64) bool { return v >= 1 })
	if m[`fastpath_sync_errors_total{mode="full"}`]+m[`fastpath_sync_errors_total{mode="partial"}`] < 1 {
		t.Errorf("fastpath_sync_errors_total: full %v, partial %v; want failed syncs counted",
			m[`fastpath_sync_errors_total{mode="full"}`], m[`fastpath_sync_errors_total{mode="partial"}`])
	}
	if got := m[`fastpath_bpf_map_fill_ratio{map="fp_services"}`]; got <= 0.25 {
		t.Errorf("fp_services fill ratio %v; want the kubernetes Service's entries in a map of 4", got)
	}
	time.Sleep(1500 * time.Millisecond) // past --healthz-timeout, with web still waiting
	for _, path := range []string{"/healthz", "/livez"} {
		if code, _, body := get(t, l.star.Node, "http://127.0.0.1:10256"+path); code != http.StatusServiceUnavailable ||
			!strings.Contains(body, `"healthy":false`) {
			t.Errorf("%s with a change unprogrammed for longer than --healthz-timeout: %d %s; want 503, unhealthy", path, code, body)
		}
	}
}

// TestHealthCheckPortInUseIsEvented: a healthCheckNodePort something else
// holds gets kube-proxy's Warning Event on the Service; once it is free,
// the agent serves it without waiting for a change.
func TestHealthCheckPortInUseIsEvented(t *testing.T) {
	l, cs := newKubeLab(t, "be1")
	const port = 32555
	blocker, err := l.star.Node.Listen("tcp4", fmt.Sprintf("0.0.0.0:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Close()
	l.startAgent()
	createOpsService(t, cs, "lb", localLB(port))
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "lb-1", Namespace: k8sNS, Labels: map[string]string{discoveryv1.LabelServiceName: "lb"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{l.backendAddr("be1")}, NodeName: ptr.To(l.kube.nodeName),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
	}
	if _, err := cs.DiscoveryV1().EndpointSlices(k8sNS).Create(t.Context(), s, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`node e2e-node failed to start healthcheck "%s/lb" on port %d: `, k8sNS, port)
	waitEvent(t, l, cs, "FailedToStartServiceHealthcheck "+want+"...", func(e corev1.Event) bool {
		return e.Reason == "FailedToStartServiceHealthcheck" && strings.HasPrefix(e.Message, want) &&
			strings.Contains(e.Message, "address already in use")
	})
	// Freed, it is served by the agent's retry (every 5s), with no change
	// in the cluster.
	blocker.Close()
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		code, _, body, err := tryGet(l.star.Node, url)
		if err == nil && code == http.StatusOK && strings.Contains(body, `"localEndpoints": 1`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("health check %s after the port was freed: %d %q %v", url, code, body, err)
		}
	}
}

// newKubeLab is newLab with a real control plane: the agent (not started
// yet) watches it as system:kube-proxy, for Node e2e-node, whose address is
// the node's on the client link, and namespace fp-e2e exists.
func newKubeLab(t *testing.T, backends ...string) (*lab, kubernetes.Interface) {
	t.Helper()
	l := newLab(t, backends...)
	env := testenv.StartForTest(t, testenv.Options{})
	kubeconfig := t.TempDir() + "/kube-proxy.kubeconfig"
	if err := env.WriteKubeconfig(kubeconfig, env.KubeProxy); err != nil {
		t.Fatal(err)
	}
	l.kube = &kubeSource{kubeconfig: kubeconfig, nodeName: "e2e-node"}
	createNodeAndNamespace(t, env.Clientset, l.kube.nodeName, l.star.Host("client").NodeIP.String())
	return l, env.Clientset
}

// localLB makes a Service a LoadBalancer with externalTrafficPolicy Local
// and the given healthCheckNodePort (0: the apiserver picks one).
func localLB(hcPort int32) func(*corev1.ServiceSpec) {
	return func(s *corev1.ServiceSpec) {
		s.Type, s.ExternalTrafficPolicy = corev1.ServiceTypeLoadBalancer, corev1.ServiceExternalTrafficPolicyLocal
		s.HealthCheckNodePort = hcPort
	}
}

// createOpsService creates a Service with port 80 to 8080 in fp-e2e.
func createOpsService(t *testing.T, cs kubernetes.Interface, name string, mod func(*corev1.ServiceSpec)) *corev1.Service {
	t.Helper()
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: k8sNS},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}}}}
	if mod != nil {
		mod(&svc.Spec)
	}
	svc, err := cs.CoreV1().Services(k8sNS).Create(t.Context(), svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

// waitEvent waits (20s at most) for a Warning Event in fp-e2e that match
// accepts.
func waitEvent(t *testing.T, l *lab, cs kubernetes.Interface, what string, match func(corev1.Event) bool) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		evs, err := cs.CoreV1().Events(k8sNS).List(t.Context(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs.Items {
			last = fmt.Sprintf("%s %s %s: %s", e.Type, e.Reason, e.InvolvedObject.Name, e.Message)
			if e.Type == corev1.EventTypeWarning && match(e) {
				return
			}
		}
	}
	t.Fatalf("no Event: %s; last event: %s\nagent log:\n%s", what, last, l.agentLog)
}
