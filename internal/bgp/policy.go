// Package bgp advertises LoadBalancer IPs and pod CIDRs to upstream routers
// over BGP, as FastpathBGPPeeringPolicy objects (deploy/crds) say.
//
// Three layers, each testable alone:
//   - policy.go parses the CRD into Policy values (errors name the field);
//   - desired.go is pure: policies + this Node + the Services this node may
//     announce -> the Desired speaker (ASN, router ID, peers, prefixes);
//   - speaker.go drives GoBGP (as a library) to that state, diffing peers
//     and prefixes so a change costs O(changed), never a re-advertisement;
//     controller.go feeds it from the API.
package bgp

import (
	"fmt"
	"net/netip"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// PolicyGVR is the FastpathBGPPeeringPolicy resource.
var PolicyGVR = schema.GroupVersionResource{Group: "fastpath.io", Version: "v1alpha1", Resource: "fastpathbgppeeringpolicies"}

// Defaults where the CRD leaves a field out (RFC 4271's suggested hold
// time; GoBGP's and FRR's restart time).
const (
	DefaultHoldTime    = 90 * time.Second
	DefaultRestartTime = 120 * time.Second
	DefaultPasswordKey = "password"
)

// Policy is one parsed FastpathBGPPeeringPolicy.
type Policy struct {
	Name         string
	NodeSelector labels.Selector
	LocalASN     uint32
	Peers        []Peer
	// LoadBalancerIPs of Services matching ServiceSelector are advertised.
	LoadBalancerIPs bool
	ServiceSelector labels.Selector
	PodCIDR         bool
}

// Peer is one router of a policy.
type Peer struct {
	Address   netip.Addr
	ASN       uint32
	HoldTime  time.Duration
	Keepalive time.Duration
	// PasswordSecret names the Secret holding the TCP MD5 password ("":
	// none); the controller resolves it into Password.
	PasswordSecret, PasswordKey string
	Password                    string
	GracefulRestart             bool
	RestartTime                 time.Duration
}

// policySpec mirrors the CRD's spec for decoding.
type policySpec struct {
	NodeSelector *metav1.LabelSelector `json:"nodeSelector"`
	LocalASN     int64                 `json:"localASN"`
	Peers        []struct {
		Address           string `json:"address"`
		ASN               int64  `json:"asn"`
		HoldTimeSeconds   *int64 `json:"holdTimeSeconds"`
		KeepaliveSeconds  *int64 `json:"keepaliveTimeSeconds"`
		PasswordSecretRef *struct {
			Name string `json:"name"`
			Key  string `json:"key"`
		} `json:"passwordSecretRef"`
		GracefulRestart *struct {
			Enabled            *bool  `json:"enabled"`
			RestartTimeSeconds *int64 `json:"restartTimeSeconds"`
		} `json:"gracefulRestart"`
	} `json:"peers"`
	Advertise *struct {
		LoadBalancerIPs *bool                 `json:"loadBalancerIPs"`
		ServiceSelector *metav1.LabelSelector `json:"serviceSelector"`
		PodCIDR         bool                  `json:"podCIDR"`
	} `json:"advertise"`
}

// ParsePolicy reads a FastpathBGPPeeringPolicy. The apiserver's CEL rules
// refuse bad input first; these checks repeat them so that an object stored
// before the rules existed is reported with its field, never half-used.
func ParsePolicy(u *unstructured.Unstructured) (*Policy, error) {
	raw, _, _ := unstructured.NestedMap(u.Object, "spec")
	var spec policySpec
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(raw, &spec); err != nil {
		return nil, fmt.Errorf("spec: %w", err)
	}
	p := &Policy{Name: u.GetName(), NodeSelector: labels.Everything(), ServiceSelector: labels.Everything(), LoadBalancerIPs: true}
	var err error
	if p.NodeSelector, err = selector(spec.NodeSelector); err != nil {
		return nil, fmt.Errorf("spec.nodeSelector: %w", err)
	}
	if p.LocalASN, err = asn(spec.LocalASN); err != nil {
		return nil, fmt.Errorf("spec.localASN: %w", err)
	}
	if a := spec.Advertise; a != nil {
		if a.LoadBalancerIPs != nil {
			p.LoadBalancerIPs = *a.LoadBalancerIPs
		}
		p.PodCIDR = a.PodCIDR
		if p.ServiceSelector, err = selector(a.ServiceSelector); err != nil {
			return nil, fmt.Errorf("spec.advertise.serviceSelector: %w", err)
		}
	}
	if len(spec.Peers) == 0 {
		return nil, fmt.Errorf("spec.peers: at least one peer is required")
	}
	seen := map[netip.Addr]bool{}
	for i, sp := range spec.Peers {
		field := fmt.Sprintf("spec.peers[%d]", i)
		peer := Peer{HoldTime: DefaultHoldTime, RestartTime: DefaultRestartTime, GracefulRestart: true}
		peer.Address, err = netip.ParseAddr(sp.Address)
		switch {
		case err != nil:
			return nil, fmt.Errorf("%s.address: %q is not an IP address", field, sp.Address)
		case !peer.Address.IsGlobalUnicast() || peer.Address.Zone() != "":
			return nil, fmt.Errorf("%s.address: %s is not a unicast address", field, peer.Address)
		case seen[peer.Address]:
			return nil, fmt.Errorf("%s.address: %s is listed twice", field, peer.Address)
		}
		seen[peer.Address] = true
		if peer.ASN, err = asn(sp.ASN); err != nil {
			return nil, fmt.Errorf("%s.asn: %w", field, err)
		}
		if s := sp.HoldTimeSeconds; s != nil {
			if *s < 3 || *s > 65535 {
				return nil, fmt.Errorf("%s.holdTimeSeconds: %d is outside 3..65535", field, *s)
			}
			peer.HoldTime = time.Duration(*s) * time.Second
		}
		peer.Keepalive = peer.HoldTime / 3
		if s := sp.KeepaliveSeconds; s != nil {
			if *s < 1 || time.Duration(*s)*time.Second*3 > peer.HoldTime {
				return nil, fmt.Errorf("%s.keepaliveTimeSeconds: %d must be at least 1 and at most a third of the hold time", field, *s)
			}
			peer.Keepalive = time.Duration(*s) * time.Second
		}
		if ref := sp.PasswordSecretRef; ref != nil {
			if ref.Name == "" {
				return nil, fmt.Errorf("%s.passwordSecretRef.name: required", field)
			}
			peer.PasswordSecret, peer.PasswordKey = ref.Name, ref.Key
			if peer.PasswordKey == "" {
				peer.PasswordKey = DefaultPasswordKey
			}
		}
		if gr := sp.GracefulRestart; gr != nil {
			if gr.Enabled != nil {
				peer.GracefulRestart = *gr.Enabled
			}
			if s := gr.RestartTimeSeconds; s != nil {
				if *s < 1 || *s > 4095 {
					return nil, fmt.Errorf("%s.gracefulRestart.restartTimeSeconds: %d is outside 1..4095", field, *s)
				}
				peer.RestartTime = time.Duration(*s) * time.Second
			}
		}
		p.Peers = append(p.Peers, peer)
	}
	return p, nil
}

func selector(s *metav1.LabelSelector) (labels.Selector, error) {
	if s == nil {
		return labels.Everything(), nil
	}
	return metav1.LabelSelectorAsSelector(s)
}

// asn checks an AS number: 4 bytes, not 0, AS_TRANS (RFC 6793), 65535 or
// 4294967295 (RFC 7300).
func asn(n int64) (uint32, error) {
	if n < 1 || n > 4294967294 || n == 23456 || n == 65535 {
		return 0, fmt.Errorf("%d is not a usable AS number (1..4294967294, not 23456 or 65535)", n)
	}
	return uint32(n), nil
}
