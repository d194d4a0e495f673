package svctranslate

import (
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TrimService and TrimSlice cut an object down to what Translate reads, so
// an informer cache (their transform) holds nothing else: kubectl's
// last-applied-configuration annotation, selectors, user labels, the
// EndpointSlice controller's owner references and the pods' targetRefs are
// often most of an object. They keep too what names the object in an Event
// (name, namespace, UID, resourceVersion) and, on a slice, the
// last-change-trigger-time annotation (network-programming latency). A
// field Translate starts to read must be kept here: TestGolden translates
// every case trimmed too and demands the same result.
//
// Both work in place (an informer's transform may) and are idempotent.

// TrimService keeps what Translate reads of a Service.
func TrimService(s *corev1.Service) {
	s.ObjectMeta = trimMeta(&s.ObjectMeta, []string{LabelServiceProxyName})
	sp := &s.Spec
	ports := sp.Ports
	for i := range ports {
		p := &ports[i]
		*p = corev1.ServicePort{Name: p.Name, Protocol: p.Protocol, Port: p.Port, NodePort: p.NodePort}
	}
	s.Spec = corev1.ServiceSpec{
		Type:                     sp.Type,
		ClusterIP:                sp.ClusterIP,
		ClusterIPs:               sp.ClusterIPs,
		ExternalIPs:              sp.ExternalIPs,
		Ports:                    ports,
		SessionAffinity:          sp.SessionAffinity,
		SessionAffinityConfig:    sp.SessionAffinityConfig,
		LoadBalancerSourceRanges: sp.LoadBalancerSourceRanges,
		ExternalTrafficPolicy:    sp.ExternalTrafficPolicy,
		InternalTrafficPolicy:    sp.InternalTrafficPolicy,
		HealthCheckNodePort:      sp.HealthCheckNodePort,
	}
	var ingress []corev1.LoadBalancerIngress
	for _, ing := range s.Status.LoadBalancer.Ingress {
		if ing.IP != "" { // a hostname-only ingress programs nothing
			ingress = append(ingress, corev1.LoadBalancerIngress{IP: ing.IP, IPMode: ing.IPMode})
		}
	}
	s.Status = corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: ingress}}
}

// TrimSlice keeps what Translate reads of an EndpointSlice.
func TrimSlice(s *discoveryv1.EndpointSlice) {
	s.ObjectMeta = trimMeta(&s.ObjectMeta, []string{discoveryv1.LabelServiceName, discoveryv1.LabelManagedBy},
		corev1.EndpointsLastChangeTriggerTime)
	for i := range s.Endpoints {
		e := &s.Endpoints[i]
		*e = discoveryv1.Endpoint{Addresses: e.Addresses, Conditions: e.Conditions, NodeName: e.NodeName, Hints: e.Hints}
	}
	for i := range s.Ports {
		s.Ports[i].AppProtocol = nil
	}
}

// trimMeta keeps the identity of an object and the labels and annotations
// named.
func trimMeta(m *metav1.ObjectMeta, labels []string, annotations ...string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion,
		Labels: keep(m.Labels, labels...), Annotations: keep(m.Annotations, annotations...),
	}
}

// keep returns the entries of m under the keys named: m itself when it
// holds nothing else (no new map for an object already trimmed).
func keep(m map[string]string, keys ...string) map[string]string {
	n := 0
	for _, k := range keys {
		if _, ok := m[k]; ok {
			n++
		}
	}
	switch n {
	case len(m):
		return m
	case 0:
		return nil
	}
	out := make(map[string]string, n)
	for _, k := range keys {
		if v, ok := m[k]; ok {
			out[k] = v
		}
	}
	return out
}
