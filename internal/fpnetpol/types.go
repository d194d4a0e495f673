// Package fpnetpol is the API of FastpathNetworkPolicy and
// FastpathClusterwideNetworkPolicy (deploy/crds): the Go types, decoding
// from the API's objects, and the checks the apiserver cannot make for
// certain (regular expressions compiled with Go's RE2). internal/policy
// turns a Policy into endpoint entries; docs/l7.md has the semantics.
package fpnetpol

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GVRs of the two kinds.
var (
	PolicyGVR            = schema.GroupVersionResource{Group: "fastpath.io", Version: "v1alpha1", Resource: "fastpathnetworkpolicies"}
	ClusterwidePolicyGVR = schema.GroupVersionResource{Group: "fastpath.io", Version: "v1alpha1", Resource: "fastpathclusterwidenetworkpolicies"}
)

// NamespaceLabel is the label selectors use for a pod's namespace.
const NamespaceLabel = "io.kubernetes.pod.namespace"

// Spec is the spec of both kinds.
type Spec struct {
	EndpointSelector metav1.LabelSelector `json:"endpointSelector"`
	// nil: the direction is not enforced by this policy; empty: enforced,
	// nothing allowed.
	Ingress []IngressRule `json:"ingress,omitempty"`
	Egress  []EgressRule  `json:"egress,omitempty"`
}

// IngressRule allows its peers on its ports.
type IngressRule struct {
	FromEndpoints []metav1.LabelSelector `json:"fromEndpoints,omitempty"`
	FromCIDR      []string               `json:"fromCIDR,omitempty"`
	ToPorts       []PortRule             `json:"toPorts,omitempty"`
}

// EgressRule allows its peers on its ports.
type EgressRule struct {
	ToEndpoints []metav1.LabelSelector `json:"toEndpoints,omitempty"`
	ToCIDR      []string               `json:"toCIDR,omitempty"`
	ToPorts     []PortRule             `json:"toPorts,omitempty"`
}

// PortRule is a set of ports and their HTTP rules.
type PortRule struct {
	Ports []Port   `json:"ports"`
	Rules *L7Rules `json:"rules,omitempty"`
}

// Port is port..endPort of a protocol (TCP when empty).
type Port struct {
	Port     int32  `json:"port"`
	EndPort  int32  `json:"endPort,omitempty"`
	Protocol string `json:"protocol,omitempty"`
}

// L7Rules: HTTP allows (nil: every request) and denies.
type L7Rules struct {
	HTTP     []HTTPRule `json:"http,omitempty"`
	HTTPDeny []HTTPRule `json:"httpDeny,omitempty"`
}

// HTTPRule matches a request when every field given matches. Method, Path
// and Host are anchored RE2 expressions.
type HTTPRule struct {
	Method  string        `json:"method,omitempty"`
	Path    string        `json:"path,omitempty"`
	Host    string        `json:"host,omitempty"`
	Headers []HeaderMatch `json:"headers,omitempty"`
}

// HeaderMatch: present (name only), equal to Value, or matching Regex.
type HeaderMatch struct {
	Name  string  `json:"name"`
	Value *string `json:"value,omitempty"`
	Regex string  `json:"regex,omitempty"`
}
