// Package conformance compares fastpath with the real kube-proxy by
// experiment: one kube-apiserver (internal/testenv), one set of Services,
// EndpointSlices and Nodes, and two identical node topologies in fp- network
// namespaces - one proxied by kube-proxy v1.37 in iptables mode, one by the
// fastpath agent - probed with the same TCP, UDP and SCTP connections. Every
// case of the table (cases_test.go) asserts, per side, the set of backends
// reached (or refused / timeout) and the source addresses the backends saw,
// and the fastpath side must match what kube-proxy did in the same step.
//
//	go test ./test/conformance/                 # as root; about a minute
//	FASTPATH_CONFORMANCE_KUBEPROXY_ONLY=1 go test ./test/conformance/
//
// Sides:
//
//   - kube-proxy (kubeproxy.go): forked from a thread inside the node
//     namespace, reaching the apiserver over a veth into the testenv's
//     namespace (topology.go); it waits for a change by polling
//     iptables-save in that namespace.
//   - fastpath (fastpath.go): the real agent binary with --kubeconfig,
//     --node-name and --nodeport-addresses, behind the FastpathSideEnabled
//     switch; it waits by reading the pinned maps.
//   - fastpath-translation (oracle_test.go): svctranslate.Translate on the
//     objects the apiserver holds, predicting each probe; it needs no agent.
//
// While fastpath cannot be compared (switch off, or an agent without the
// Kubernetes flags) every "fastpath" subtest fails, unless
// FASTPATH_CONFORMANCE_KUBEPROXY_ONLY=1 turns that into a loud skip.
//
// Health (health_test.go): after the table, both sides' /healthz, /livez
// and healthCheckNodePort answers are compared byte for byte (status,
// headers but Date, body; times normalized), with kube-proxy's IPv6
// proxier entry the one stated difference.
//
// Waiting: after each step the harness moves a marker Service to a new port
// and waits until every side shows it (bounded); each watch delivers in
// order, so a side showing the marker has handled the step.
//
// Safety: every rule kube-proxy writes lives in the node namespace, which
// the test deletes at the end (also on failure; a killed run's namespaces
// are removed by the next run); kube-proxy is checked to run in that
// namespace before the first case, and the root namespace's iptables and
// ip6tables rules (nft and legacy) must be unchanged when the test ends.
// Processes are ended by PID (process group) only. Traffic stays inside the
// test's namespaces.
package conformance
