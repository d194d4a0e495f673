package lab

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/fastpath-net/fastpath/internal/agent"
	"github.com/fastpath-net/fastpath/internal/flows"
	"github.com/fastpath-net/fastpath/internal/flows/flowmap"
	"github.com/fastpath-net/fastpath/internal/nettopo"
)

// policyChecks enforces NetworkPolicy in the running lab with real TCP:
// deny-all ingress to the web pods blocks new connections (same node and
// across nodes) and `fastpathctl monitor` shows the drop with its
// reason; an allow from app=client re-opens them for the client only; a
// policy that cannot be enforced gets an Event; a connection allowed then
// stays up across a restart of the agents of both nodes; relabelling the
// client flips the verdict both ways; a namespace selector follows the
// namespace's labels both ways; deleting the policies restores traffic.
func policyChecks(t *testing.T, st *State, opts Options) {
	t.Helper()
	ctx := t.Context()
	cs := mustClient(t)
	pods, err := podsWithIPs(ctx, cs, opts.Nodes)
	if err != nil {
		t.Fatal(err)
	}
	client, web0 := openPodNS(t, "client"), openPodNS(t, "web-0")
	web1, web2 := findPod(pods, "web-1"), findPod(pods, "web-2")
	toWeb1 := net.JoinHostPort(web1.ip.String(), fmt.Sprint(webWhoami)) // node2: across nodes from the client
	toWeb2 := net.JoinHostPort(web2.ip.String(), fmt.Sprint(webWhoami)) // node1: same node

	web := metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}
	createPolicy(t, cs, &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "deny-web"},
		Spec:       networkingv1.NetworkPolicySpec{PodSelector: web, PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}},
	})
	waitVerdict(t, client, toWeb1, false, "deny-all: client -> web-1 (other node)")
	waitVerdict(t, client, toWeb2, false, "deny-all: client -> web-2 (same node)")
	monitorShowsDrop(t, opts.Bin, 2, client, toWeb1, "deny-web")

	createPolicy(t, cs, &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "allow-client"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: web, Ingress: []networkingv1.NetworkPolicyIngressRule{{
			From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}}}},
		}}},
	})
	waitVerdict(t, client, toWeb1, true, "allow app=client: client -> web-1")
	waitVerdict(t, client, toWeb2, true, "allow app=client: client -> web-2")
	waitVerdict(t, web0, toWeb1, false, "allow app=client: web-0 -> web-1 (not selected)")
	notEnforceableEvent(t, cs, web)

	// An allowed connection (replies pass by conntrack) survives both
	// agents' restart; enforcement goes on after it.
	conn := httpConn(t, client, net.JoinHostPort(web1.ip.String(), fmt.Sprint(webHTTPPort)))
	for i := 1; i <= opts.Nodes; i++ {
		if err := stop(st.Processes[fmt.Sprintf("agent-%s", nodeName(i))]); err != nil {
			t.Fatal(err)
		}
		if err := startAgent(opts, st, i); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= opts.Nodes; i++ {
		if err := waitCNIReady(ctx, opts.Bin, i, agentTimeout); err != nil {
			t.Fatal(err)
		}
	}
	conn.get(t, "after the agents' restart")
	conn.Close()
	waitVerdict(t, web0, toWeb1, false, "after restart: web-0 -> web-1 still denied")
	waitVerdict(t, client, toWeb1, true, "after restart: client -> web-1 still allowed")

	relabel(t, cs, "client", "other")
	waitVerdict(t, client, toWeb1, false, "client relabelled app=other -> web-1")
	relabel(t, cs, "client", "client")
	waitVerdict(t, client, toWeb1, true, "client relabelled back to app=client -> web-1")

	// A namespace selector: web-0 (not allowed by allow-client) is let in
	// while its namespace has the label, and no more once it is removed.
	createPolicy(t, cs, &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "allow-team-blue"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: web, Ingress: []networkingv1.NetworkPolicyIngressRule{{
			From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"fp-lab-team": "blue"}}}},
		}}},
	})
	waitVerdict(t, web0, toWeb1, false, "namespace without the label: web-0 -> web-1")
	labelNamespace(t, cs, `"blue"`)
	waitVerdict(t, web0, toWeb1, true, "namespace labelled fp-lab-team=blue: web-0 -> web-1")
	labelNamespace(t, cs, "null")
	waitVerdict(t, web0, toWeb1, false, "namespace label removed: web-0 -> web-1")

	for _, name := range []string{"deny-web", "allow-client", "allow-team-blue"} {
		if err := cs.NetworkingV1().NetworkPolicies(namespace).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitVerdict(t, web0, toWeb1, true, "policies deleted: web-0 -> web-1")
	waitVerdict(t, client, toWeb2, true, "policies deleted: client -> web-2")
}

// notEnforceableEvent: a peer selector on a label left out of identities
// cannot be enforced; the agents say so with a Warning Event on the policy
// (and allow nothing by it).
func notEnforceableEvent(t *testing.T, cs kubernetes.Interface, web metav1.LabelSelector) {
	t.Helper()
	ctx := t.Context()
	createPolicy(t, cs, &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "by-template-hash"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: web, Ingress: []networkingv1.NetworkPolicyIngressRule{{
			From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"pod-template-hash": "abc"}}}},
		}}},
	})
	var last string
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		evs, err := cs.CoreV1().Events(namespace).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=by-template-hash"})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs.Items {
			last = e.Reason + ": " + e.Message
			if e.Reason == "PolicyNotEnforceable" && strings.Contains(e.Message, "pod-template-hash") {
				t.Logf("event: %s", last)
				if err := cs.NetworkingV1().NetworkPolicies(namespace).Delete(ctx, "by-template-hash", metav1.DeleteOptions{}); err != nil {
					t.Fatal(err)
				}
				return
			}
		}
	}
	t.Fatalf("no PolicyNotEnforceable Event on by-template-hash (last: %q)", last)
}

func openPodNS(t *testing.T, pod string) *nettopo.NS {
	t.Helper()
	ns, err := nettopo.OpenNS(podNSName(pod))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Release)
	return ns
}

func createPolicy(t *testing.T, cs kubernetes.Interface, np *networkingv1.NetworkPolicy) {
	t.Helper()
	if _, err := cs.NetworkingV1().NetworkPolicies(namespace).Create(t.Context(), np, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func relabel(t *testing.T, cs kubernetes.Interface, pod, app string) {
	t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"labels":{"app":%q}}}`, app)
	if _, err := cs.CoreV1().Pods(namespace).Patch(t.Context(), pod, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// labelNamespace sets the lab namespace's fp-lab-team label to value (JSON:
// a string, or null to remove it).
func labelNamespace(t *testing.T, cs kubernetes.Interface, value string) {
	t.Helper()
	patch := `{"metadata":{"labels":{"fp-lab-team":` + value + `}}}`
	if _, err := cs.CoreV1().Namespaces().Patch(t.Context(), namespace, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// waitVerdict waits up to 15 s until a new TCP connection from -> addr
// succeeds (allowed) or times out (denied: the SYN is dropped; a refusal
// would be an error of another kind), then requires the same result twice
// more.
func waitVerdict(t *testing.T, from *nettopo.NS, addr string, allowed bool, what string) {
	t.Helper()
	var err error
	ok := 0
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline) && ok < 3; {
		_, err = nettopo.AskTCP(from, addr, 700*time.Millisecond)
		if allowed == (err == nil) && (allowed || isTimeout(err)) {
			ok++
			continue
		}
		ok = 0
		time.Sleep(100 * time.Millisecond)
	}
	if ok < 3 {
		t.Fatalf("%s: allowed=%v wanted, last probe: %v\n%s", what, allowed, err, logs())
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// monitorShowsDrop streams node i's flow events with `fastpathctl
// monitor`, run inside the node's namespace, where the agent serves them
// (--monitor-addr; the agent is the verdict ring's one reader), while
// probes from `from` to addr are denied. It wants a policy-denied drop
// whose sentence names the policy that enforces it.
func monitorShowsDrop(t *testing.T, bin string, i int, from *nettopo.NS, addr, policy string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	type result struct {
		out []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := exec.CommandContext(ctx, "ip", "netns", "exec", nodeNSName(i), filepath.Join(bin, "fastpathctl"),
			"monitor", "--type", "drop", "--reason", "policy-denied", "-n", "1", "-o", "json").Output()
		done <- result{out, err}
	}()
	var res result
	// Events are streamed from the moment the monitor subscribes: probe
	// until it has one.
probe:
	for {
		select {
		case res = <-done:
			break probe
		default:
			nettopo.AskTCP(from, addr, 300*time.Millisecond)
		}
	}
	if res.err != nil {
		t.Fatalf("fastpathctl monitor: %v\n%s", res.err, res.out)
	}
	var e flows.Event
	for dec := json.NewDecoder(bytes.NewReader(res.out)); e.Type == "" || e.Type == flows.TypeLost; {
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("monitor printed %q: %v", res.out, err)
		}
	}
	// Both ends named: the client, on the other node, through the Pod
	// informer's IP index; the server through its endpoint record.
	if e.Type != flows.TypeDrop || !strings.HasPrefix(e.Summary, "policy denied: ingress of ") || !strings.Contains(e.Summary, policy) ||
		e.Source.Pod != "client" || !strings.HasPrefix(e.Destination.Pod, "web-") {
		t.Fatalf("monitor printed %s, want a drop from pod client to a web pod saying \"policy denied: ingress of ...\" and naming %s", res.out, policy)
	}
	t.Logf("monitor: %s -> %s/%s: %s", e.Source.Pod, e.Destination.Namespace, e.Destination.Pod, e.Summary)

	// The same drops are an edge of the node's flow map.
	flowMapHasEdge(t, i, "default/client", "default/web", flows.VerdictDropped)
}

// flowMapHasEdge wants an edge from -> to with verdict v (seen at least
// once) in node i's flow map, which the agent serves in its namespace.
func flowMapHasEdge(t *testing.T, i int, from, to string, v flows.Verdict) {
	t.Helper()
	node, err := nettopo.OpenNS(nodeNSName(i))
	if err != nil {
		t.Fatal(err)
	}
	defer node.Release()
	resp, err := node.HTTPClient(5 * time.Second).Get("http://" + agent.DefaultMonitorAddr + "/v1/flowmap?namespace=default")
	if err != nil {
		t.Fatalf("flow map: %v", err)
	}
	defer resp.Body.Close()
	var g flowmap.Graph
	if err := json.NewDecoder(resp.Body).Decode(&g); err != nil {
		t.Fatalf("flow map: %v", err)
	}
	for _, e := range g.Edges {
		if e.Source == from && e.Target == to && e.Verdict == v && e.Count > 0 {
			return
		}
	}
	t.Fatalf("flow map of node%d has no %s edge %s -> %s: %+v", i, v, from, to, g.Edges)
}

// keepAlive is one HTTP/1.1 connection kept open between requests.
type keepAlive struct {
	net.Conn
	r *bufio.Reader
}

func httpConn(t *testing.T, from *nettopo.NS, addr string) *keepAlive {
	t.Helper()
	var c net.Conn
	err := from.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", addr, probeTimeout)
		return err
	})
	if err != nil {
		t.Fatalf("connect %s: %v", addr, err)
	}
	k := &keepAlive{Conn: c, r: bufio.NewReader(c)}
	k.get(t, "first request")
	return k
}

func (k *keepAlive) get(t *testing.T, what string) {
	t.Helper()
	if err := k.SetDeadline(time.Now().Add(probeTimeout)); err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Fprintf(k, "GET / HTTP/1.1\r\nHost: lab\r\n\r\n"); err != nil {
		t.Fatalf("%s: write: %v", what, err)
	}
	resp, err := http.ReadResponse(k.r, nil)
	if err != nil {
		t.Fatalf("%s: established connection: %v", what, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: status %s", what, resp.Status)
	}
}
