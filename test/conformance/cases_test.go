package conformance

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Hosts: "client" is a pod on this node, "ext" a client outside the cluster,
// be1..be4 are backends answering "<name>:<port>" on 8080, 8081 and 9090.
// Endpoints are on this node unless remote(); remote ones are still
// reachable (the other node is a name only), which is what lets a case see
// that a Local policy left them out.
//
// Outcomes: a backend ("be1" means "be1:8080"), refused (REJECT: ICMP
// port-unreachable, or a reset), timeout (dropped; also a VIP:port no rule
// claims, which leaves by the node's default route and is lost).
// Sources, the set of peer addresses the reached backends saw: "client" =
// the prober's own address; "node" = one of the node's (masqueraded).
// Every successful probe states its sources: which traffic kube-proxy
// masquerades is part of what the Service does.

// web is ClusterIP Service "web": TCP port "http" 80 -> 8080.
func web(mods ...svcMod) *corev1.Service {
	return service("web", append([]svcMod{withPorts(tcpPort("http", 80, 8080))}, mods...)...)
}

// webSlice is a slice of "web" with port http=8080.
func webSlice(suffix string, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return endpointSlice("web", suffix, ports(tcpSP("http", 8080)), eps...)
}

func eps(hosts ...string) []discoveryv1.Endpoint {
	out := make([]discoveryv1.Endpoint, len(hosts))
	for i, h := range hosts {
		out[i] = endpoint(h)
	}
	return out
}

func apply(objs ...any) func(*caseCtx) { return func(c *caseCtx) { c.apply(objs...) } }

func single(name string, do func(*caseCtx), probes ...probe) testCase {
	return testCase{name: name, steps: []step{{name: "create", apply: do, probes: probes}}}
}

func fe(addr string, port int32, proto string) string {
	return fmt.Sprintf("%s:%d/%s", addr, port, proto)
}

// The documented fastpath differences (see fpDiff).
const (
	whyETPLocalNoLocal = "svctranslate (testdata/etp-local-no-local.txtar): an external frontend of an " +
		"externalTrafficPolicy=Local Service without local endpoints has no backends and answers with ICMP " +
		"port-unreachable (clients are refused at once); kube-proxy DROPs, so its clients time out"
	whyLocalNoLocal = "docs/architecture.md (Traffic policies and scopes): a frontend whose traffic-policy set is " +
		"empty rejects (ECONNREFUSED at once); kube-proxy DROPs, so its clients wait for their connect timeout"
)

var cases = []testCase{
	// ---- ClusterIP basics ----
	single("clusterip-tcp",
		apply(web(), webSlice("a", eps("be1", "be2")...)),
		tcp("client", cip("web", 80), "be1", "be2").source("client")),

	single("clusterip-multiport",
		apply(service("web", withPorts(tcpPort("http", 80, 8080), tcpPort("alt", 81, 8081))),
			endpointSlice("web", "a", ports(tcpSP("http", 8080), tcpSP("alt", 8081)), eps("be1", "be2")...)),
		tcp("client", cip("web", 80), "be1:8080", "be2:8080").source("client"),
		tcp("client", cip("web", 81), "be1:8081", "be2:8081").source("client")),

	single("clusterip-udp",
		apply(service("dns", withPorts(udpPort("dns", 53, 8080))),
			endpointSlice("dns", "a", ports(udpSP("dns", 8080)), eps("be1", "be2", "be3")...)),
		udp("client", cip("dns", 53), "be1", "be2", "be3").source("client")),

	// The same port number over TCP and UDP, to different target ports.
	single("clusterip-tcp-and-udp-same-port",
		apply(service("mix", withPorts(tcpPort("t", 80, 8080), udpPort("u", 80, 8081))),
			endpointSlice("mix", "a", ports(tcpSP("t", 8080), udpSP("u", 8081)), eps("be1", "be2")...)),
		tcp("client", cip("mix", 80), "be1:8080", "be2:8080").source("client"),
		udp("client", cip("mix", 80), "be1:8081", "be2:8081").source("client")),

	// A named targetPort resolves per endpoint: the slices carry the numbers.
	single("named-targetport-per-endpoint",
		apply(service("web", withPorts(svcPort("http", corev1.ProtocolTCP, 80, intstr.FromString("web-port")))),
			endpointSlice("web", "a", ports(tcpSP("http", 8080)), endpoint("be1")),
			endpointSlice("web", "b", ports(tcpSP("http", 9090)), endpoint("be2"))),
		tcp("client", cip("web", 80), "be1:8080", "be2:9090").source("client")),

	// SCTP: this kernel has no SCTP sockets (CONFIG_IP_SCTP is off), so the
	// probes are raw INIT chunks (sctp.go); both sides must also program
	// the frontends. The backends check the CRC32c after NAT.
	{name: "sctp", steps: []step{{
		name: "create",
		apply: apply(service("sctp", nodePortType, withPorts(svcPort("s", corev1.ProtocolSCTP, 80, intstr.FromInt32(8080)))),
			endpointSlice("sctp", "a", ports(slicePort("s", corev1.ProtocolSCTP, 8080)), endpoint("be1"), endpoint("be2", remote))),
		newFrontends: func(c *caseCtx) []string {
			svc := c.service("sctp")
			return []string{fe(svc.Spec.ClusterIP, 80, "SCTP"), fe(nodeIPStr, svc.Spec.Ports[0].NodePort, "SCTP")}
		},
		probes: []probe{
			sctp("client", cip("sctp", 80), "be1", "be2").source("client"),
			sctp("ext", nodePort("sctp", "s"), "be1", "be2").source("node"),
		},
	}}},

	// ---- no usable endpoints ----
	single("no-endpoints-tcp",
		apply(web()),
		tcp("client", cip("web", 80), Refused)),

	// Connected UDP sockets see the ICMP port-unreachable as ECONNREFUSED.
	single("no-endpoints-udp",
		apply(service("dns", withPorts(udpPort("dns", 53, 8080)))),
		udp("client", cip("dns", 53), Refused)),

	single("empty-slice",
		apply(web(), webSlice("a")),
		tcp("client", cip("web", 80), Refused)),

	single("all-not-ready",
		apply(web(), webSlice("a", endpoint("be1", notReady), endpoint("be2", notReady))),
		tcp("client", cip("web", 80), Refused)),

	// No ready endpoint anywhere: serving terminating ones are used.
	single("terminating-only-fallback",
		apply(web(), webSlice("a", endpoint("be1", terminating), endpoint("be2", terminating))),
		tcp("client", cip("web", 80), "be1", "be2").source("client")),

	single("terminating-not-serving",
		apply(web(), webSlice("a", endpoint("be1", terminatingNotServing))),
		tcp("client", cip("web", 80), Refused)),

	single("ready-and-terminating",
		apply(web(), webSlice("a", endpoint("be1"), endpoint("be2", terminating), endpoint("be3", notReady))),
		tcp("client", cip("web", 80), "be1").source("client")),

	// ---- NodePort ----
	single("nodeport",
		apply(web(nodePortType), webSlice("a", endpoint("be1"), endpoint("be2", remote))),
		tcp("ext", nodePort("web", "http"), "be1", "be2").source("node"),
		tcp("client", cip("web", 80), "be1", "be2").source("client"),
		tcp("client", nodePort("web", "http"), "be1", "be2").source("node")),

	single("nodeport-udp",
		apply(service("dns", nodePortType, withPorts(udpPort("dns", 53, 8080))),
			endpointSlice("dns", "a", ports(udpSP("dns", 8080)), endpoint("be1"), endpoint("be2", remote))),
		udp("ext", nodePort("dns", "dns"), "be1", "be2").source("node")),

	// ETP=Local: traffic from outside reaches local endpoints only, with
	// its source address; traffic from a pod short-circuits to all.
	single("nodeport-etp-local",
		apply(web(nodePortType, etpLocal), webSlice("a", endpoint("be1"), endpoint("be2"), endpoint("be3", remote))),
		tcp("ext", nodePort("web", "http"), "be1", "be2").source("client"),
		tcp("client", cip("web", 80), "be1", "be2", "be3").source("client"),
		tcp("client", nodePort("web", "http"), "be1", "be2", "be3").source("client")),

	single("nodeport-etp-local-no-local-endpoints",
		apply(web(nodePortType, etpLocal), webSlice("a", endpoint("be3", remote))),
		tcp("ext", nodePort("web", "http"), Timeout).
			fastpathDiffers("deliberate", whyETPLocalNoLocal, []string{Refused}, nil),
		tcp("client", cip("web", 80), "be3").source("client")),

	// ETP=Local falls back to local serving-terminating endpoints on its
	// own; the ClusterIP still has a ready one elsewhere.
	single("etp-local-terminating-fallback",
		apply(web(nodePortType, etpLocal), webSlice("a", endpoint("be1", terminating), endpoint("be3", remote))),
		tcp("ext", nodePort("web", "http"), "be1").source("client"),
		tcp("client", cip("web", 80), "be3").source("client")),

	// ---- LoadBalancer ----
	{name: "loadbalancer", steps: []step{{
		name: "create",
		apply: func(c *caseCtx) {
			c.apply(web(loadBalancerType), webSlice("a", endpoint("be1"), endpoint("be2", remote)))
			c.setLB("web", 0)
		},
		probes: []probe{
			tcp("ext", lbIP(0, 80), "be1", "be2").source("node"),
			tcp("ext", nodePort("web", "http"), "be1", "be2").source("node"),
			tcp("client", lbIP(0, 80), "be1", "be2").source("node"),
		},
	}}},

	{name: "loadbalancer-etp-local", steps: []step{{
		name: "create",
		apply: func(c *caseCtx) {
			c.apply(web(loadBalancerType, etpLocal), webSlice("a", endpoint("be1"), endpoint("be3", remote)))
			c.setLB("web", 0)
		},
		probes: []probe{
			tcp("ext", lbIP(0, 80), "be1").source("client"),
			tcp("client", lbIP(0, 80), "be1", "be3").source("client"),
		},
	}}},

	{name: "loadbalancer-no-nodeports", steps: []step{{
		name: "create",
		apply: func(c *caseCtx) {
			c.apply(web(loadBalancerType, noLBNodePorts), webSlice("a", endpoint("be1"), endpoint("be2")))
			c.setLB("web", 0)
			if np := c.service("web").Spec.Ports[0].NodePort; np != 0 {
				c.t.Fatalf("allocateLoadBalancerNodePorts=false, yet nodePort %d", np)
			}
		},
		newFrontends: func(c *caseCtx) []string {
			return []string{fe(c.service("web").Spec.ClusterIP, 80, "TCP"), fe(c.lbIP(0), 80, "TCP")}
		},
		probes: []probe{tcp("ext", lbIP(0, 80), "be1", "be2").source("node")},
	}}},

	// loadBalancerSourceRanges filter the LB IPs only. "web" allows the
	// node's network, where the external client is (10.99.0.2); "closed"
	// allows neither client. A pod is outside both. The NodePort and the
	// ClusterIP of "closed" stay open to everyone.
	{name: "loadbalancer-source-ranges", steps: []step{{
		name: "create",
		apply: func(c *caseCtx) {
			c.apply(web(loadBalancerType, sourceRanges("10.99.0.0/24")), webSlice("a", endpoint("be1")),
				service("closed", loadBalancerType, sourceRanges("192.0.2.0/24"), withPorts(tcpPort("http", 80, 8080))),
				endpointSlice("closed", "a", ports(tcpSP("http", 8080)), endpoint("be2")))
			c.setLB("web", 0)
			c.setLB("closed", 1)
		},
		probes: []probe{
			tcp("ext", lbIP(0, 80), "be1").source("node"),
			tcp("client", lbIP(0, 80), Timeout),
			tcp("ext", lbIP(1, 80), Timeout),
			tcp("client", lbIP(1, 80), Timeout),
			tcp("ext", nodePort("closed", "http"), "be2").source("node"),
			tcp("client", cip("closed", 80), "be2").source("client"),
		},
	}}},

	// A range change applies to new connections at the next sync: the
	// external client is let in, then shut out again.
	{name: "loadbalancer-source-ranges-update", steps: []step{
		{name: "closed",
			apply: func(c *caseCtx) {
				c.apply(web(loadBalancerType, noLBNodePorts, sourceRanges("192.0.2.0/24")), webSlice("a", endpoint("be1")))
				c.setLB("web", 0)
			},
			probes: []probe{tcp("ext", lbIP(0, 80), Timeout)}},
		{name: "opened", apply: apply(web(loadBalancerType, noLBNodePorts, sourceRanges("192.0.2.0/24", "10.99.0.2/32"))),
			probes: []probe{tcp("ext", lbIP(0, 80), "be1").source("node")}},
		{name: "all", apply: apply(web(loadBalancerType, noLBNodePorts, sourceRanges("0.0.0.0/0"))),
			probes: []probe{tcp("client", lbIP(0, 80), "be1").source("node")}},
		{name: "closed-again", apply: apply(web(loadBalancerType, noLBNodePorts, sourceRanges("192.0.2.0/24"))),
			probes: []probe{tcp("ext", lbIP(0, 80), Timeout)}},
	}},

	// ---- externalIPs ----
	single("externalips",
		func(c *caseCtx) {
			c.apply(web(externalIPs(c.externalIP(0))), webSlice("a", endpoint("be1"), endpoint("be2", remote)))
		},
		tcp("ext", extIPt(0, 80), "be1", "be2").source("node"),
		tcp("client", extIPt(0, 80), "be1", "be2").source("node")),

	single("externalips-etp-local",
		func(c *caseCtx) {
			c.apply(web(externalIPs(c.externalIP(0)), etpLocal), webSlice("a", endpoint("be1"), endpoint("be3", remote)))
		},
		tcp("ext", extIPt(0, 80), "be1").source("client"),
		tcp("client", cip("web", 80), "be1", "be3").source("client")),

	// ---- internalTrafficPolicy ----
	single("itp-local",
		apply(web(itpLocal), webSlice("a", endpoint("be1"), endpoint("be3", remote))),
		tcp("client", cip("web", 80), "be1").source("client")),

	single("itp-local-no-local-endpoints",
		apply(web(itpLocal), webSlice("a", endpoint("be3", remote))),
		tcp("client", cip("web", 80), Timeout).
			fastpathDiffers("deliberate", whyLocalNoLocal, []string{Refused}, nil)),

	single("itp-local-etp-cluster-nodeport",
		apply(web(nodePortType, itpLocal), webSlice("a", endpoint("be1"), endpoint("be3", remote))),
		tcp("client", cip("web", 80), "be1").source("client"),
		tcp("ext", nodePort("web", "http"), "be1", "be3").source("node")),

	// ---- session affinity ----
	single("session-affinity-clientip",
		apply(web(nodePortType, clientIPAffinity), webSlice("a", eps("be1", "be2", "be3")...)),
		tcp("client", cip("web", 80), "be1", "be2", "be3").one().source("client"),
		tcp("ext", nodePort("web", "http"), "be1", "be2", "be3").one().source("node")),

	// ---- what is not proxied ----
	{name: "headless-ignored", steps: []step{{
		name:         "create",
		apply:        apply(web(headless), webSlice("a", eps("be1")...)),
		newFrontends: func(*caseCtx) []string { return nil },
		// The pod address itself is left alone.
		probes: []probe{tcp("client", literal(podAddr("be1").String()+":8080"), "be1").source("client")},
	}}},

	{name: "externalname-ignored", steps: []step{{
		name:         "create",
		apply:        apply(service("alias", externalName("example.invalid"))),
		newFrontends: func(*caseCtx) []string { return nil },
	}}},

	// ---- slices ----
	// A selector that matches no pod: the EndpointSlice controller keeps
	// an empty slice of its own next to the hand-made one.
	single("selector-plus-handmade-slice",
		apply(web(selector("app", "nothing-matches")), webSlice("a", eps("be1", "be2")...)),
		tcp("client", cip("web", 80), "be1", "be2").source("client")),

	single("two-slices-overlapping",
		apply(web(), webSlice("a", eps("be1", "be2")...), webSlice("b", eps("be2", "be3")...)),
		tcp("client", cip("web", 80), "be1", "be2", "be3").source("client")),

	// ---- updates ----
	{name: "port-change", steps: []step{
		{name: "create", apply: apply(web(), webSlice("a", eps("be1", "be2")...)),
			probes: []probe{tcp("client", cip("web", 80), "be1", "be2").source("client")}},
		{name: "change",
			apply: apply(service("web", withPorts(tcpPort("http", 82, 8081))),
				endpointSlice("web", "a", ports(tcpSP("http", 8081)), eps("be1", "be2")...)),
			probes: []probe{
				tcp("client", cip("web", 82), "be1:8081", "be2:8081").source("client"),
				tcp("client", cip("web", 80), Timeout),
			}},
	}},

	{name: "endpoint-removal", steps: []step{
		{name: "three", apply: apply(web(), webSlice("a", eps("be1", "be2", "be3")...)),
			probes: []probe{tcp("client", cip("web", 80), "be1", "be2", "be3").source("client")}},
		{name: "two", apply: apply(webSlice("a", eps("be1", "be3")...)),
			probes: []probe{tcp("client", cip("web", 80), "be1", "be3").source("client")}},
		{name: "none", apply: apply(webSlice("a")),
			probes: []probe{tcp("client", cip("web", 80), Refused)}},
		{name: "back", apply: apply(webSlice("a", eps("be4")...)),
			probes: []probe{tcp("client", cip("web", 80), "be4").source("client")}},
	}},

	// kube-proxy deletes the conntrack entries of UDP flows to an endpoint
	// that left; without that, a client that keeps its source port would
	// stay on be1 (it still answers) for as long as it sends. kube-proxy
	// deletes them after it has written the rules the harness waits for,
	// so the flow is probed again one step (and two seconds) later.
	{name: "udp-endpoint-removal-moves-flow", steps: []step{
		{name: "be1", apply: apply(service("dns", withPorts(udpPort("dns", 53, 8080))),
			endpointSlice("dns", "a", ports(udpSP("dns", 8080)), eps("be1")...)),
			probes: []probe{udp("client", cip("dns", 53), "be1").fromPort(41053).source("client")}},
		{name: "be2", apply: apply(endpointSlice("dns", "a", ports(udpSP("dns", 8080)), eps("be2")...))},
		{name: "settled", apply: func(*caseCtx) { time.Sleep(2 * time.Second) },
			probes: []probe{udp("client", cip("dns", 53), "be2").fromPort(41053).source("client")}},
	}},

	{name: "endpoint-becomes-not-ready", steps: []step{
		{name: "ready", apply: apply(web(), webSlice("a", eps("be1", "be2")...)),
			probes: []probe{tcp("client", cip("web", 80), "be1", "be2").source("client")}},
		{name: "not-ready", apply: apply(webSlice("a", endpoint("be1"), endpoint("be2", notReady))),
			probes: []probe{tcp("client", cip("web", 80), "be1").source("client")}},
	}},

	{name: "slice-deleted", steps: []step{
		{name: "two-slices", apply: apply(web(), webSlice("a", eps("be1")...), webSlice("b", eps("be2")...)),
			probes: []probe{tcp("client", cip("web", 80), "be1", "be2").source("client")}},
		{name: "delete-b", apply: func(c *caseCtx) { c.deleteSlice("web-b") },
			probes: []probe{tcp("client", cip("web", 80), "be1").source("client")}},
	}},

	{name: "service-deletion", steps: []step{
		{name: "create", apply: apply(web(), webSlice("a", eps("be1")...)),
			probes: []probe{tcp("client", cip("web", 80), "be1").source("client")}},
		{name: "delete", apply: func(c *caseCtx) { c.deleteService("web") },
			probes: []probe{tcp("client", cip("web", 80), Timeout)}},
	}},

	{name: "type-change-to-nodeport", steps: []step{
		{name: "clusterip", apply: apply(web(), webSlice("a", eps("be1", "be2")...)),
			probes: []probe{tcp("client", cip("web", 80), "be1", "be2").source("client")}},
		{name: "nodeport", apply: apply(web(nodePortType)),
			probes: []probe{
				tcp("ext", nodePort("web", "http"), "be1", "be2").source("node"),
				tcp("client", cip("web", 80), "be1", "be2").source("client"),
			}},
	}},

	// ---- topology ----
	// Every ready endpoint has zone hints and some name this node's zone.
	single("topology-zone-hints",
		apply(web(), webSlice("a",
			endpoint("be1", zoneHints(nodeZone)),
			endpoint("be2", remote, zoneHints(otherZone)),
			endpoint("be3", remote, zoneHints(nodeZone)))),
		tcp("client", cip("web", 80), "be1", "be3").source("client")),

	// One ready endpoint without hints: hints are ignored altogether.
	single("topology-hint-missing",
		apply(web(), webSlice("a",
			endpoint("be1", zoneHints(nodeZone)),
			endpoint("be2", remote))),
		tcp("client", cip("web", 80), "be1", "be2").source("client")),

	// No endpoint for this node's zone: hints are ignored.
	single("topology-no-hint-for-zone",
		apply(web(), webSlice("a",
			endpoint("be1", zoneHints(otherZone)),
			endpoint("be2", remote, zoneHints(otherZone)))),
		tcp("client", cip("web", 80), "be1", "be2").source("client")),

	// Node hints (trafficDistribution PreferSameNode) win over zone hints.
	single("topology-node-hints",
		apply(web(), webSlice("a",
			endpoint("be1", nodeHints(nodeName), zoneHints(nodeZone)),
			endpoint("be2", nodeHints(nodeName), zoneHints(nodeZone)),
			endpoint("be3", remote, nodeHints(otherNode), zoneHints(nodeZone)))),
		tcp("client", cip("web", 80), "be1", "be2").source("client")),

	// ---- the cluster's own Service ----
	// `kubernetes` in default: 10.96.0.1:443 -> the apiserver's advertise
	// address :6443, maintained by the apiserver itself. In each topology
	// a stand-in host owns that address and answers "apiserver:6443".
	single("kubernetes-default-service",
		func(*caseCtx) {},
		tcp("client", literal("10.96.0.1:443"), "apiserver:6443").source("client")),

	// ---- hairpin: a backend reaches itself through its Service ----
	single("hairpin-single-backend",
		apply(web(), webSlice("a", eps("be1")...)),
		tcp("be1", cip("web", 80), "be1").source("node")),

	single("hairpin-two-backends",
		apply(web(), webSlice("a", eps("be1", "be2")...)),
		tcp("be1", cip("web", 80), "be1", "be2").source("client", "node")),
}
