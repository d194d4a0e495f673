package lab

// L7 checks of the paths where tc_lb changed a flow (tuple clash, hairpin),
// the node's own clients and egress across nodes; l7Checks calls them.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"

	"github.com/fastpath-net/fastpath/internal/datapath/ctmap"
	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
	"github.com/fastpath-net/fastpath/internal/fpnetpol"
	"github.com/fastpath-net/fastpath/internal/nettopo"
)

// clashSourcePort is the client's source port of both connections of
// tupleClash: below the ephemeral range, so no other socket has it.
const clashSourcePort = 23457

// tupleClash: two Services with one backend each, the same pod (backend,
// its HTTP port), and two connections from the client's same source port,
// one to each frontend, both open: the second one's tuple at the backend
// clashes with the first's, so tc_lb gives it a source port of its own
// (FP_CT_F_SNAT_PORT, bpf/include/ct.h). With the client's egress L7 rule
// in place both go through node 1's proxy, which must see (and answer on)
// the client's own tuple: a proxy that took the clashed port would answer
// a port the client has no socket on, and the second connection would
// never open. Needs an egress L7 rule of the client allowing
// GET api.example/v1/* to the backend.
func tupleClash(t *testing.T, client *nettopo.NS, backend netip.Addr) {
	t.Helper()
	vips := make([]string, 0, 2)
	for _, name := range []string{"fp-clash-a", "fp-clash-b"} {
		vips = append(vips, oneBackendService(t, name, backend))
	}
	for _, vip := range vips {
		waitCurl(t, client, "tuple clash: "+vip+" serves", 200, "-H", "Host: api.example", "http://"+vip+"/v1/x")
	}
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i, vip := range vips {
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		c, err := client.DialFromPort(ctx, clashSourcePort, "tcp4", net.JoinHostPort(vip, "80"))
		cancel()
		if err != nil {
			t.Fatalf("tuple clash: connection %d to %s from port %d: %v", i, vip, clashSourcePort, err)
		}
		conns = append(conns, c)
		if err := rawGet(c, "/v1/x", "api.example", "hello from web-"); err != nil {
			t.Errorf("tuple clash: connection %d to %s: %v", i, vip, err)
		}
	}
	// The second flow did clash: tc_lb gave it a port of its own.
	k := ctmap.Key{SAddr: lbmap.AddrFrom(conns[1].LocalAddr().(*net.TCPAddr).AddrPort().Addr()),
		DAddr: lbmap.AddrFrom(netip.MustParseAddr(vips[1])), SPort: clashSourcePort, DPort: 80,
		Proto: syscall.IPPROTO_TCP, Dir: ctmap.Forward}
	if e, err := ctEntry(1, k); err != nil || e.Flags&ctmap.SNATPort == 0 {
		t.Errorf("tuple clash: %s: entry %+v, err %v; want a port of its own (the check proves nothing without it)", k, e, err)
	}
	// Both stay usable, one request after the other.
	for i, c := range conns {
		if err := rawGet(c, "/v1/x", "api.example", "hello from web-"); err != nil {
			t.Errorf("tuple clash: connection %d, second request: %v", i, err)
		}
	}
}

// oneBackendService creates a ClusterIP Service without selector and its
// EndpointSlice naming one backend on the web pods' HTTP port, removed
// when the test ends, and returns its ClusterIP.
func oneBackendService(t *testing.T, name string, backend netip.Addr) string {
	t.Helper()
	cs := mustClient(t)
	ctx := t.Context()
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{
		{Name: "http", Port: 80, TargetPort: intstr.FromInt32(webHTTPPort), Protocol: corev1.ProtocolTCP}}}}
	created, err := cs.CoreV1().Services(namespace).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.CoreV1().Services(namespace).Delete(context.Background(), name, metav1.DeleteOptions{}) })
	ready, port, proto, pname := true, int32(webHTTPPort), corev1.ProtocolTCP, "http"
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{backend.String()}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		Ports:       []discoveryv1.EndpointPort{{Name: &pname, Port: &port, Protocol: &proto}},
	}
	if _, err := cs.DiscoveryV1().EndpointSlices(namespace).Create(ctx, slice, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.DiscoveryV1().EndpointSlices(namespace).Delete(context.Background(), slice.Name, metav1.DeleteOptions{})
	})
	return created.Spec.ClusterIP
}

// rawGet sends GET path with Host host on c and wants 200 with body
// containing want.
func rawGet(c net.Conn, path, host, want string) error {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, host); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
		return fmt.Errorf("%s %q, want 200 with %q", resp.Status, body, want)
	}
	return nil
}

// ctEntry reads one entry of node i's pinned fp_ct.
func ctEntry(node int, k ctmap.Key) (ctmap.Entry, error) {
	var e ctmap.Entry
	m, err := ebpf.LoadPinnedMap(filepath.Join(NodePinDir(node), "maps", "fp_ct"), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return e, err
	}
	defer m.Close()
	return e, m.Lookup(&k, &e)
}

// webL7Any lets every peer, the node itself included, only GET /public on
// the web pods' HTTP port.
const webL7Any = `
endpointSelector: {matchLabels: {app: web}}
ingress:
- toPorts:
  - ports: [{port: 8000}]
    rules:
      http:
      - {method: GET, path: "/public(/.*)?"}
`

// hostL7: a host-network client (curl in node 1's namespace) to web-2 (on
// node 1), whose ingress has HTTP rules for every peer: judged by the
// proxy as the host, GET /public allowed, POST /admin denied with 403.
// The datapath sees the flow at web-2's veth TC egress only, where it
// cannot hand it to the proxy; it turns it around into the veth.
func hostL7(t *testing.T, dyn dynamic.Interface, web2 netip.Addr) {
	t.Helper()
	node, err := nettopo.OpenNS(nodeNSName(1))
	if err != nil {
		t.Fatal(err)
	}
	defer node.Release()
	createFNP(t, dyn, "web-l7-any", webL7Any)
	base := fmt.Sprintf("http://%s:%d", web2, webHTTPPort)
	waitCurl(t, node, "node itself: POST /admin denied", 403, "-X", "POST", base+"/admin")
	curlWant(t, node, "node itself: GET /public", 200, "hello from web-2", base+"/public")
	curlWant(t, node, "node itself: POST /admin", 403, "Access denied", "-X", "POST", base+"/admin")
	hairpinL7(t, web2)
	if err := dyn.Resource(fpnetpol.PolicyGVR).Namespace(namespace).Delete(t.Context(), "web-l7-any", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitCurl(t, node, "node itself: policy deleted", 200, "-X", "POST", base+"/admin")
}

// hairpinPort is web-2's source port of hairpinL7's own connection.
const hairpinPort = 23458

// hairpinL7: web-2 calls a Service whose one backend is web-2 itself, under
// webL7Any: tc_lb masquerades the flow (hairpin) and sends it to web-2's
// veth, where its ingress wants the proxy; the flow is turned around,
// given its client and frontend back and proxied: GET /public 200, POST
// /admin 403, answered as the Service.
func hairpinL7(t *testing.T, web2 netip.Addr) {
	t.Helper()
	vip := oneBackendService(t, "fp-hairpin", web2)
	pod := openPodNS(t, "web-2")
	base := "http://" + vip
	waitCurl(t, pod, "hairpin: POST /admin denied", 403, "-X", "POST", base+"/admin")
	curlWant(t, pod, "hairpin: GET /public", 200, "hello from web-2", base+"/public")
	curlWant(t, pod, "hairpin: POST /admin", 403, "Access denied", "-X", "POST", base+"/admin")
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	c, err := pod.DialFromPort(ctx, hairpinPort, "tcp4", net.JoinHostPort(vip, "80"))
	if err != nil {
		t.Fatalf("hairpin: connection from port %d: %v", hairpinPort, err)
	}
	defer c.Close()
	if err := rawGet(c, "/public", "web", "hello from web-2"); err != nil {
		t.Errorf("hairpin: GET /public: %v", err)
	}
	// The flow was masqueraded (SNAT without a port of its own), or the
	// check proves nothing.
	k := ctmap.Key{SAddr: lbmap.AddrFrom(web2), DAddr: lbmap.AddrFrom(netip.MustParseAddr(vip)), SPort: hairpinPort, DPort: 80,
		Proto: syscall.IPPROTO_TCP, Dir: ctmap.Forward}
	if e, err := ctEntry(1, k); err != nil || e.Flags&(ctmap.SNAT|ctmap.SNATPort) != ctmap.SNAT {
		t.Errorf("hairpin: %s: entry %+v, err %v; want a masqueraded flow", k, e, err)
	}
}

// egressAcrossNodes: the client's egress HTTP rules for a pod on the other
// node (web-1, by its address, no Service) are enforced on the client's
// node, by its proxy, with the client's identity: an allowed request
// reaches web-1 from node 1's address (the proxy's upstream), a denied one
// is answered 403 there. Node 2's proxy is not involved: web-1's ingress
// has no HTTP rules now, and a request node 2 proxied would come from node
// 2's address.
func egressAcrossNodes(t *testing.T, client *nettopo.NS, web1 netip.Addr) {
	t.Helper()
	base := fmt.Sprintf("http://%s:%d", web1, webHTTPPort)
	curlWant(t, client, "egress across nodes: GET api.example/v1/x", 200,
		fmt.Sprintf("hello from web-1 (you are %s:", nodeIP(1)), "-H", "Host: api.example", base+"/v1/x")
	curlWant(t, client, "egress across nodes: POST api.example/v1/x", 403, "Access denied", "-X", "POST", "-H", "Host: api.example", base+"/v1/x")
	curlWant(t, client, "egress across nodes: GET other.example/v1/x", 403, "Access denied", "-H", "Host: other.example", base+"/v1/x")
}
