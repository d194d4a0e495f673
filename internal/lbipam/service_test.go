package lbipam

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestRequestFor(t *testing.T) {
	for _, c := range []struct {
		name      string
		ann       map[string]string
		specIP    string
		families  []corev1.IPFamily
		want      string // requested address, or the error
		wantShare string
	}{
		{name: "nothing", want: "invalid IP"},
		{name: "annotation", ann: map[string]string{RequestedIPAnnotation: "10.0.0.1"}, want: "10.0.0.1"},
		{name: "spec", specIP: "10.0.0.2", want: "10.0.0.2"},
		{name: "both agree", ann: map[string]string{RequestedIPAnnotation: "10.0.0.3"}, specIP: "10.0.0.3", want: "10.0.0.3"},
		{name: "both disagree", ann: map[string]string{RequestedIPAnnotation: "10.0.0.3"}, specIP: "10.0.0.4", want: "spec.loadBalancerIP: 10.0.0.4 disagrees"},
		{name: "bad annotation", ann: map[string]string{RequestedIPAnnotation: "ten"}, want: "metadata.annotations[" + RequestedIPAnnotation + "]"},
		{name: "mapped", specIP: "::ffff:10.0.0.1", want: "spec.loadBalancerIP"},
		{name: "sharing", ann: map[string]string{SharingKeyAnnotation: "k"}, want: "invalid IP", wantShare: "k"},
		{name: "v6 first", families: []corev1.IPFamily{corev1.IPv6Protocol, corev1.IPv4Protocol}, specIP: "2001:db8::1", want: "2001:db8::1"},
	} {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "s", Annotations: c.ann, Labels: map[string]string{"app": "a"}},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerIP: c.specIP, IPFamilies: c.families,
				Ports: []corev1.ServicePort{{Protocol: corev1.ProtocolUDP, Port: 53}}},
		}
		req, err := RequestFor(svc)
		got := req.Requested.String()
		if err != nil {
			got = err.Error()
		}
		if !strings.Contains(got, c.want) || req.SharingKey != c.wantShare {
			t.Errorf("%s: got %q share %q, want %q share %q", c.name, got, req.SharingKey, c.want, c.wantShare)
		}
		if err == nil && (req.Key != "ns/s" || req.Labels["app"] != "a" || req.Labels[namespaceLabel] != "ns" ||
			req.IPv6 != (len(c.families) > 0) || len(req.Ports) != 1 || req.Ports[0] != (PortKey{"UDP", 53})) {
			t.Errorf("%s: request %+v", c.name, req)
		}
	}
}

func TestManaged(t *testing.T) {
	class := func(s string) *string { return &s }
	for _, c := range []struct {
		typ   corev1.ServiceType
		class *string
		want  bool
	}{
		{corev1.ServiceTypeLoadBalancer, nil, true},
		{corev1.ServiceTypeLoadBalancer, class(Class), true},
		{corev1.ServiceTypeLoadBalancer, class("metallb.io/metallb"), false},
		{corev1.ServiceTypeNodePort, nil, false},
		{corev1.ServiceTypeClusterIP, class(Class), false},
	} {
		svc := &corev1.Service{Spec: corev1.ServiceSpec{Type: c.typ, LoadBalancerClass: c.class}}
		if got := Managed(svc); got != c.want {
			t.Errorf("type %s class %v: Managed = %v, want %v", c.typ, c.class, got, c.want)
		}
	}
}
