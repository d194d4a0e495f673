package conformance

import (
	"context"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
)

const (
	namespace  = "conformance"
	markerName = "fpconf-marker"
	// managedBy marks the hand-made EndpointSlices (there is no kubelet and
	// no pod: every endpoint is written by the test).
	managedBy = "conformance.fastpath.dev"
	// markerBasePort + generation is the marker's port.
	markerBasePort = 20000
)

var advertiseAddr = netip.MustParseAddr("192.0.2.1")

// nodePortCIDR is --nodeport-addresses for both contenders: the Node's
// InternalIP, facing the external client.
const nodePortCIDR = "10.99.0.0/24"

// ---- Services ----

type svcMod func(*corev1.Service)

func service(name string, mods ...svcMod) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP},
	}
	for _, m := range mods {
		m(s)
	}
	return s
}

func svcPort(name string, proto corev1.Protocol, port int32, target intstr.IntOrString) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Protocol: proto, Port: port, TargetPort: target}
}

func tcpPort(name string, port int32, target int) corev1.ServicePort {
	return svcPort(name, corev1.ProtocolTCP, port, intstr.FromInt32(int32(target)))
}

func udpPort(name string, port int32, target int) corev1.ServicePort {
	return svcPort(name, corev1.ProtocolUDP, port, intstr.FromInt32(int32(target)))
}

func withPorts(ps ...corev1.ServicePort) svcMod {
	return func(s *corev1.Service) { s.Spec.Ports = append(s.Spec.Ports, ps...) }
}

func nodePortType(s *corev1.Service)     { s.Spec.Type = corev1.ServiceTypeNodePort }
func loadBalancerType(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeLoadBalancer }
func etpLocal(s *corev1.Service) {
	s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
}
func itpLocal(s *corev1.Service) {
	s.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicyLocal)
}
func clientIPAffinity(s *corev1.Service) { s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP }
func headless(s *corev1.Service)         { s.Spec.ClusterIP = corev1.ClusterIPNone }
func noLBNodePorts(s *corev1.Service) {
	s.Spec.AllocateLoadBalancerNodePorts = ptr.To(false)
}
func externalIPs(ips ...string) svcMod {
	return func(s *corev1.Service) { s.Spec.ExternalIPs = ips }
}
func selector(kv ...string) svcMod {
	return func(s *corev1.Service) {
		s.Spec.Selector = map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			s.Spec.Selector[kv[i]] = kv[i+1]
		}
	}
}
func sourceRanges(cidrs ...string) svcMod {
	return func(s *corev1.Service) { s.Spec.LoadBalancerSourceRanges = cidrs }
}
func externalName(host string) svcMod {
	return func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeExternalName
		s.Spec.ExternalName = host
	}
}

// ---- EndpointSlices ----

type epMod func(*discoveryv1.Endpoint)

// endpoint is a ready endpoint on this node at the pod host's address.
func endpoint(host string, mods ...epMod) discoveryv1.Endpoint {
	e := discoveryv1.Endpoint{
		Addresses: []string{podAddr(host).String()},
		Conditions: discoveryv1.EndpointConditions{
			Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false),
		},
		NodeName: ptr.To(nodeName),
		Zone:     ptr.To(nodeZone),
	}
	for _, m := range mods {
		m(&e)
	}
	return e
}

// remote puts the endpoint on the other node (it is still reachable: the
// test's "other node" is only a name, the host hangs off this node).
func remote(e *discoveryv1.Endpoint) { e.NodeName = ptr.To(otherNode); e.Zone = ptr.To(otherZone) }

func notReady(e *discoveryv1.Endpoint) {
	e.Conditions = discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(false), Terminating: ptr.To(false)}
}

// terminating is a terminating endpoint that still serves.
func terminating(e *discoveryv1.Endpoint) {
	e.Conditions = discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(true), Terminating: ptr.To(true)}
}

// terminatingNotServing is a terminating endpoint that no longer serves.
func terminatingNotServing(e *discoveryv1.Endpoint) {
	e.Conditions = discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(false), Terminating: ptr.To(true)}
}

func zoneHints(zones ...string) epMod {
	return func(e *discoveryv1.Endpoint) {
		if e.Hints == nil {
			e.Hints = &discoveryv1.EndpointHints{}
		}
		for _, z := range zones {
			e.Hints.ForZones = append(e.Hints.ForZones, discoveryv1.ForZone{Name: z})
		}
	}
}

func nodeHints(nodes ...string) epMod {
	return func(e *discoveryv1.Endpoint) {
		if e.Hints == nil {
			e.Hints = &discoveryv1.EndpointHints{}
		}
		for _, n := range nodes {
			e.Hints.ForNodes = append(e.Hints.ForNodes, discoveryv1.ForNode{Name: n})
		}
	}
}

func slicePort(name string, proto corev1.Protocol, port int32) discoveryv1.EndpointPort {
	return discoveryv1.EndpointPort{Name: ptr.To(name), Protocol: ptr.To(proto), Port: ptr.To(port)}
}

func tcpSP(name string, port int32) discoveryv1.EndpointPort {
	return slicePort(name, corev1.ProtocolTCP, port)
}

func udpSP(name string, port int32) discoveryv1.EndpointPort {
	return slicePort(name, corev1.ProtocolUDP, port)
}

// endpointSlice is a hand-made IPv4 slice of Service svc.
func endpointSlice(svc, suffix string, ports []discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: svc + "-" + suffix, Namespace: namespace,
			Labels: map[string]string{
				discoveryv1.LabelServiceName: svc,
				discoveryv1.LabelManagedBy:   managedBy,
			},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       ports,
		Endpoints:   eps,
	}
}

func ports(ps ...discoveryv1.EndpointPort) []discoveryv1.EndpointPort { return ps }

// ---- applying ----

// upsertService creates s, or updates the existing one keeping what the
// apiserver allocated (ClusterIP, NodePorts) unless s sets it.
func upsertService(ctx context.Context, c kubernetes.Interface, s *corev1.Service) (out *corev1.Service, err error) {
	err = retry.RetryOnConflict(retry.DefaultBackoff, func() (err error) {
		out, err = upsertServiceOnce(ctx, c, s)
		return err
	})
	return out, err
}

func upsertServiceOnce(ctx context.Context, c kubernetes.Interface, s *corev1.Service) (*corev1.Service, error) {
	svcs := c.CoreV1().Services(s.Namespace)
	cur, err := svcs.Get(ctx, s.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return svcs.Create(ctx, s, metav1.CreateOptions{})
	}
	if err != nil {
		return nil, err
	}
	s = s.DeepCopy()
	s.ResourceVersion = cur.ResourceVersion
	if s.Spec.ClusterIP == "" {
		s.Spec.ClusterIP, s.Spec.ClusterIPs = cur.Spec.ClusterIP, cur.Spec.ClusterIPs
	}
	return svcs.Update(ctx, s, metav1.UpdateOptions{})
}

func upsertSlice(ctx context.Context, c kubernetes.Interface, s *discoveryv1.EndpointSlice) error {
	return retry.RetryOnConflict(retry.DefaultBackoff, func() error { return upsertSliceOnce(ctx, c, s) })
}

func upsertSliceOnce(ctx context.Context, c kubernetes.Interface, s *discoveryv1.EndpointSlice) error {
	slices := c.DiscoveryV1().EndpointSlices(s.Namespace)
	cur, err := slices.Get(ctx, s.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = slices.Create(ctx, s, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	s = s.DeepCopy()
	s.ResourceVersion = cur.ResourceVersion
	_, err = slices.Update(ctx, s, metav1.UpdateOptions{})
	return err
}

// setLoadBalancerIP writes status.loadBalancer.ingress, as a cloud
// controller would.
func setLoadBalancerIP(ctx context.Context, c kubernetes.Interface, name, ip string) error {
	svcs := c.CoreV1().Services(namespace)
	return retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		cur, err := svcs.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip}}
		_, err = svcs.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
}

// createNodes makes this node and the "other" node, with InternalIPs and
// zones, as a kubelet would have.
func createNodes(ctx context.Context, c kubernetes.Interface) error {
	for _, n := range []struct{ name, ip, zone string }{
		{nodeName, nodeIPStr, nodeZone},
		{otherNode, "10.99.0.3", otherZone},
	} {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
			Name: n.name,
			Labels: map[string]string{
				corev1.LabelHostname:      n.name,
				corev1.LabelTopologyZone:  n.zone,
				corev1.LabelOSStable:      "linux",
				"node.fastpath.dev/owner": "conformance",
			},
		}}
		if _, err := c.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("node %s: %w", n.name, err)
		}
		// The controller-manager's node controllers change a new Node at
		// once; write the status on the latest version.
		err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
			cur, err := c.CoreV1().Nodes().Get(ctx, n.name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			cur.Status.Addresses = []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: n.ip},
				{Type: corev1.NodeHostName, Address: n.name},
			}
			cur.Status.Conditions = []corev1.NodeCondition{{
				Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
				LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now(),
			}}
			_, err = c.CoreV1().Nodes().UpdateStatus(ctx, cur, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			return fmt.Errorf("node %s status: %w", n.name, err)
		}
	}
	return nil
}

// marker is a Service the harness changes after every step of a case: its
// port and its one endpoint's port both become markerBasePort+generation.
// A proxy that programmed that frontend with that backend has handled every
// Service and EndpointSlice event before it (each watch delivers in order,
// and both proxies program from their informer caches).
type marker struct {
	client kubernetes.Interface
	gen    int
	vip    string
}

func newMarker(ctx context.Context, c kubernetes.Interface) (*marker, error) {
	m := &marker{client: c}
	s, err := upsertService(ctx, c, m.service())
	if err != nil {
		return nil, fmt.Errorf("marker service: %w", err)
	}
	m.vip = s.Spec.ClusterIP
	if err := upsertSlice(ctx, c, m.slice()); err != nil {
		return nil, fmt.Errorf("marker slice: %w", err)
	}
	return m, nil
}

func (m *marker) port() int { return markerBasePort + m.gen }

func (m *marker) service() *corev1.Service {
	return service(markerName, withPorts(tcpPort("m", int32(m.port()), m.port())))
}

// slice has the marker endpoint, hinted for this node's zone, and a decoy
// hinted for the other zone. kube-proxy learns its node's zone from a Node
// handler that may run after its first syncs (1.37; under load it did, and
// the topology cases then saw hints ignored): a proxy that shows the marker
// without the decoy honours zone hints, which every case after the first
// sync may rely on.
func (m *marker) slice() *discoveryv1.EndpointSlice {
	e := discoveryv1.Endpoint{
		Addresses:  []string{markerIPStr},
		Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
		NodeName:   ptr.To(nodeName),
	}
	zoneHints(nodeZone)(&e)
	decoy := discoveryv1.Endpoint{
		Addresses:  []string{markerDecoyIPStr},
		Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
		NodeName:   ptr.To(otherNode),
	}
	zoneHints(otherZone)(&decoy)
	return endpointSlice(markerName, "x", ports(tcpSP("m", int32(m.port()))), e, decoy)
}

// bump moves the marker to the next generation.
func (m *marker) bump(ctx context.Context) error {
	m.gen++
	if _, err := upsertService(ctx, m.client, m.service()); err != nil {
		return fmt.Errorf("marker service: %w", err)
	}
	if err := upsertSlice(ctx, m.client, m.slice()); err != nil {
		return fmt.Errorf("marker slice: %w", err)
	}
	return nil
}
