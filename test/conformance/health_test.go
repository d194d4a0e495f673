package conformance

import (
	"fmt"
	"io"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/fastpath-net/fastpath/internal/nettopo"
)

// Health endpoints, compared byte for byte: load balancers, kubelet probes
// and monitoring written for kube-proxy read fastpath's answers. Each side
// is asked the same questions in its own topology - /healthz, /livez and an
// unknown path on the node's loopback, and the healthCheckNodePort of a
// LoadBalancer Service with externalTrafficPolicy Local from the external
// client, as a cloud load balancer asks - and the status, headers (but
// Date) and body must be the same. Times in the /healthz and /livez bodies
// are the only bytes that may differ (two processes, two clocks); they are
// replaced by a placeholder, and Content-Length is checked against each
// side's own body instead of compared.

const hcService = "hc-probe"

// answer is one HTTP exchange, normalized for comparison.
type answer struct {
	Err    string // connection error class ("refused"), "" when answered
	Status int
	Header http.Header
	Body   string
}

var rfc3339 = regexp.MustCompile(`"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)"`)

func ask(ns *nettopo.NS, url string) answer {
	resp, err := ns.HTTPClient(probeTimeout).Get(url)
	if err != nil {
		if strings.Contains(err.Error(), "connection refused") {
			return answer{Err: "refused"}
		}
		return answer{Err: err.Error()}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{Err: err.Error()}
	}
	a := answer{Status: resp.StatusCode, Header: resp.Header.Clone(), Body: string(b)}
	a.Header.Del("Date")
	if cl := a.Header.Get("Content-Length"); cl != strconv.Itoa(len(b)) {
		a.Err = fmt.Sprintf("Content-Length %s for a body of %d bytes", cl, len(b))
	}
	a.Header.Del("Content-Length")
	a.Body = rfc3339.ReplaceAllString(a.Body, `"<time>"`)
	return a
}

func (a answer) String() string {
	if a.Err != "" {
		return "error: " + a.Err
	}
	var hs []string
	for k, v := range a.Header {
		hs = append(hs, k+": "+strings.Join(v, ","))
	}
	slices.Sort(hs)
	return fmt.Sprintf("%d\n%s\n%s", a.Status, strings.Join(hs, "\n"), a.Body)
}

// compareHealth runs after the case table, on the same sides.
func (h *harness) compareHealth(t *testing.T) {
	if h.fastpathProblem != "" {
		h.notComparable(t)
	}
	ctx := t.Context()
	svc, err := h.client.CoreV1().Services(namespace).Create(ctx, service(hcService, loadBalancerType, etpLocal,
		withPorts(tcpPort("http", 80, 8080))), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = h.client.CoreV1().Services(namespace).Delete(ctx, hcService, metav1.DeleteOptions{})
		_ = h.client.DiscoveryV1().EndpointSlices(namespace).Delete(ctx, hcService+"-1", metav1.DeleteOptions{})
	})
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: hcService + "-1", Namespace: namespace, Labels: map[string]string{discoveryv1.LabelServiceName: hcService}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{podAddr("be1").String()}, NodeName: ptr.To(nodeName), Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}},
			{Addresses: []string{podAddr("be2").String()}, NodeName: ptr.To(nodeName), Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}},
			{Addresses: []string{podAddr("be3").String()}, NodeName: ptr.To(otherNode), Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}},
		},
	}
	if slice, err = h.client.DiscoveryV1().EndpointSlices(namespace).Create(ctx, slice, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	hcURL := fmt.Sprintf("http://%s:%d/", nodeIPStr, svc.Spec.HealthCheckNodePort)

	// Each step: change the objects, wait until every side's health-check
	// port answers as wanted (the sides converge at their own pace), then
	// compare all the answers.
	steps := []struct {
		name   string
		change func()
		ready  func(answer) bool
	}{
		{"two local ready endpoints", func() {}, func(a answer) bool { return a.Status == 200 && strings.Contains(a.Body, `"localEndpoints": 2`) }},
		{"one local endpoint terminating", func() {
			slice.Endpoints[0].Conditions = discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(true), Terminating: ptr.To(true)}
			if slice, err = h.client.DiscoveryV1().EndpointSlices(namespace).Update(ctx, slice, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}, func(a answer) bool { return strings.Contains(a.Body, `"localEndpoints": 1`) }},
		{"no local ready endpoint", func() {
			slice.Endpoints[1].Conditions = discoveryv1.EndpointConditions{Ready: ptr.To(false)}
			if slice, err = h.client.DiscoveryV1().EndpointSlices(namespace).Update(ctx, slice, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}, func(a answer) bool { return a.Status == 503 }},
		{"service deleted", func() {
			if err := h.client.CoreV1().Services(namespace).Delete(ctx, hcService, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}, func(a answer) bool { return a.Err == "refused" }},
	}
	for _, st := range steps {
		st.change()
		got := map[string]map[string]answer{}
		for _, s := range h.live() {
			hcAnswer, err := waitAnswer(s.topo.Hosts["ext"].NS, hcURL, st.ready)
			if err != nil {
				t.Fatalf("%s: %s: health check port never answered as expected: %v\n%s", st.name, s.proxy.Name(), err, s.proxy.Logs())
			}
			got[s.proxy.Name()] = map[string]answer{
				"healthCheckNodePort from the external client": hcAnswer,
				"/healthz":            ask(s.topo.Node, "http://127.0.0.1:10256/healthz"),
				"/livez":              ask(s.topo.Node, "http://127.0.0.1:10256/livez"),
				"/unknown on healthz": ask(s.topo.Node, "http://127.0.0.1:10256/unknown"),
			}
		}
		kp, fp := got["kube-proxy"], got["fastpath"]
		if fp == nil {
			t.Fatalf("%s: the fastpath side is not live", st.name)
		}
		for _, q := range slices.Sorted(maps.Keys(kp)) {
			k, f := kp[q], fp[q]
			k.Body = withoutIPv6Proxier(t, q, k.Body)
			t.Logf("%s, %s:\n--- kube-proxy ---\n%s\n--- fastpath ---\n%s", st.name, q, k, f)
			if k.String() != f.String() {
				t.Errorf("%s, %s: fastpath answers differently from kube-proxy\n--- kube-proxy ---\n%s\n--- fastpath ---\n%s", st.name, q, k, f)
			}
		}
	}
}

// ipv6Proxier is kube-proxy's status entry for its IPv6 proxier.
const ipv6Proxier = `,"IPv6":{"lastUpdated":"<time>","healthy":true}`

// withoutIPv6Proxier removes kube-proxy's IPv6 entry from a /healthz or
// /livez body. DELIBERATE DIFFERENCE: kube-proxy runs a second, IPv6
// proxier wherever ip6tables works (it does in the node namespace, with no
// IPv6 Service to program) and reports it; fastpath's datapath is
// IPv4-only, and an "IPv6 healthy" entry would claim a proxier it does not
// run. Everything else in the body must be the same bytes.
func withoutIPv6Proxier(t *testing.T, question, body string) string {
	if !strings.HasPrefix(question, "/healthz") && !strings.HasPrefix(question, "/livez") {
		return body
	}
	if !strings.Contains(body, ipv6Proxier) {
		t.Errorf("%s: kube-proxy's body %s has no healthy IPv6 proxier entry; the documented difference no longer applies", question, body)
		return body
	}
	t.Logf("%s: deliberate difference: kube-proxy reports an IPv6 proxier, fastpath (IPv4-only) does not; compared without it", question)
	return strings.Replace(body, ipv6Proxier, "", 1)
}

// waitAnswer asks url until ok accepts the answer, for markerWait at most.
func waitAnswer(ns *nettopo.NS, url string, ok func(answer) bool) (answer, error) {
	var a answer
	for deadline := time.Now().Add(markerWait); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if a = ask(ns, url); ok(a) {
			return a, nil
		}
	}
	return a, fmt.Errorf("last answer: %s", a)
}
