package lbipam

import (
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

const (
	// Class is our spec.loadBalancerClass; Services without a class are
	// ours too, as with a cloud provider's controller.
	Class = "fastpath.io/lb"
	// RequestedIPAnnotation asks for one address (spec.loadBalancerIP,
	// deprecated, is honoured as well; both set must agree).
	RequestedIPAnnotation = "fastpath.io/lb-ip"
	// SharingKeyAnnotation opts in to sharing: Services of one namespace
	// with the same key may hold the same address when no protocol/port
	// is in both.
	SharingKeyAnnotation = "fastpath.io/lb-sharing-key"
	// ConditionType is our condition in Service.status.conditions.
	ConditionType = "fastpath.io/LoadBalancerIPAllocated"

	namespaceLabel = "io.kubernetes.service.namespace"
	nameLabel      = "io.kubernetes.service.name"
)

// Managed reports whether the Service's address is ours to give.
func Managed(svc *corev1.Service) bool {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || svc.DeletionTimestamp != nil {
		return false
	}
	return svc.Spec.LoadBalancerClass == nil || *svc.Spec.LoadBalancerClass == Class
}

// RequestFor reads what svc asks for; an error names the bad field.
func RequestFor(svc *corev1.Service) (Request, error) {
	req := Request{
		Key: svc.Namespace + "/" + svc.Name, Namespace: svc.Namespace,
		SharingKey: svc.Annotations[SharingKeyAnnotation],
	}
	set := labels.Set{namespaceLabel: svc.Namespace, nameLabel: svc.Name}
	for k, v := range svc.Labels {
		set[k] = v
	}
	req.Labels = set
	if len(svc.Spec.IPFamilies) > 0 && svc.Spec.IPFamilies[0] == corev1.IPv6Protocol {
		req.IPv6 = true
	}
	for _, p := range svc.Spec.Ports {
		req.Ports = append(req.Ports, PortKey{Protocol: string(p.Protocol), Port: p.Port})
	}
	ann, spec := svc.Annotations[RequestedIPAnnotation], svc.Spec.LoadBalancerIP
	for _, f := range []struct{ name, value string }{{"metadata.annotations[" + RequestedIPAnnotation + "]", ann}, {"spec.loadBalancerIP", spec}} {
		if f.value == "" {
			continue
		}
		ip, err := netip.ParseAddr(strings.TrimSpace(f.value))
		if err != nil || ip.Zone() != "" || ip.Is4In6() {
			return req, fmt.Errorf("%s: %q is not an IP address", f.name, f.value)
		}
		if req.Requested.IsValid() && req.Requested != ip {
			return req, fmt.Errorf("%s: %s disagrees with %s requested by the annotation", f.name, ip, req.Requested)
		}
		req.Requested = ip
	}
	return req, nil
}

// statusIPs are the parseable ingress IPs of svc.
func statusIPs(svc *corev1.Service) []netip.Addr {
	var out []netip.Addr
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if ip, err := netip.ParseAddr(in.IP); err == nil {
			out = append(out, ip)
		}
	}
	return out
}

// statusIP is the first of them, the one that counts for us.
func statusIP(svc *corev1.Service) netip.Addr {
	if ips := statusIPs(svc); len(ips) > 0 {
		return ips[0]
	}
	return netip.Addr{}
}
