// Package identity gives every distinct set of security-relevant labels (a
// pod's labels plus its namespace's name and labels) a numeric identity that
// every node agrees on. Cluster-wide identities are FastpathIdentity objects
// in the Kubernetes API (deploy/crds); reserved and CIDR identities are
// constants and node-local numbers that never reach the API.
package identity

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// ID is a security identity as the datapath sees it (a u32 in map keys).
type ID uint32

// Reserved identities, numbered as Cilium numbers them so tools and habits
// carry over. They are never allocated through the API.
const (
	// Unknown is no identity: the zero value, and the "any identity"
	// wildcard in policy entries.
	Unknown ID = 0
	// Host is this node (its own addresses).
	Host ID = 1
	// World is every address outside the cluster not covered by a more
	// specific CIDR identity (0.0.0.0/0 and ::/0 in the ipcache).
	World ID = 2
	// Unmanaged is a pod the agent does not manage (no endpoint).
	Unmanaged ID = 3
	// Health is the agent's health-check endpoint.
	Health ID = 4
	// Init is an endpoint whose labels are not known yet.
	Init ID = 5
	// RemoteNode is any other node of the cluster.
	RemoteNode ID = 6
	// KubeAPIServer is the apiserver's addresses when outside the pod network.
	KubeAPIServer ID = 7
	// WorldIPv4 and WorldIPv6 are World split by family (the ipcache's
	// 0.0.0.0/0 and ::/0), so an IPv4 ipBlock of 0.0.0.0/0 does not also
	// allow the IPv6 world.
	WorldIPv4 ID = 9
	WorldIPv6 ID = 10
)

var reservedNames = map[ID]string{
	Unknown: "unknown", Host: "host", World: "world", Unmanaged: "unmanaged",
	Health: "health", Init: "init", RemoteNode: "remote-node", KubeAPIServer: "kube-apiserver",
	WorldIPv4: "world-ipv4", WorldIPv6: "world-ipv6",
}

// Ranges. Cluster identities fit 16 bits so a policy key stays small; CIDR
// identities are node-local (every node derives them from the same
// policies, but they never need to agree, since they never leave the node).
const (
	MinCluster ID = 256
	MaxCluster ID = 65535
	MinLocal   ID = 1 << 24
	MaxLocal   ID = 1<<24 + 1<<16 - 1
)

// IsReserved reports whether id is one of the reserved identities.
func (id ID) IsReserved() bool { return id < MinCluster }

// IsCluster reports whether id is allocated through the API.
func (id ID) IsCluster() bool { return id >= MinCluster && id <= MaxCluster }

// IsLocal reports whether id is a node-local CIDR identity.
func (id ID) IsLocal() bool { return id >= MinLocal && id <= MaxLocal }

func (id ID) String() string {
	if n, ok := reservedNames[id]; ok {
		return n
	}
	return strconv.FormatUint(uint64(id), 10)
}

// Label keys. Pod labels are "k8s:<key>"; the namespace is
// "k8s:io.kubernetes.pod.namespace" and its labels
// "k8s:io.kubernetes.pod.namespace.labels.<key>". A pod label whose key
// starts with io.kubernetes.pod.namespace is dropped, or a pod could claim
// another namespace's identity by labelling itself.
const (
	SourcePrefix      = "k8s:"
	NamespaceKey      = SourcePrefix + "io.kubernetes.pod.namespace"
	NamespaceLabelKey = NamespaceKey + ".labels."
	podNamespaceSpoof = "io.kubernetes.pod.namespace"
)

// excludedPodKeys change on every rollout; including them would mint an
// identity per ReplicaSet generation and churn every map on each deploy (as
// Cilium, which excludes the same keys). A policy selecting on one of them
// cannot be enforced by identity; internal/policy fails closed on it.
var excludedPodKeys = map[string]bool{
	"pod-template-hash":        true,
	"controller-revision-hash": true,
	"pod-template-generation":  true,
}

// ExcludedPodLabel reports whether a pod label key is left out of identities.
func ExcludedPodLabel(key string) bool {
	return excludedPodKeys[key] || strings.HasPrefix(key, podNamespaceSpoof)
}

// Labels are the security-relevant labels of an identity, keys prefixed as
// above. Treat as immutable once built.
type Labels map[string]string

// ForPod returns the identity labels of a pod in namespace ns.
func ForPod(ns string, nsLabels, podLabels map[string]string) Labels {
	l := make(Labels, len(podLabels)+len(nsLabels)+1)
	for k, v := range podLabels {
		if !ExcludedPodLabel(k) {
			l[SourcePrefix+k] = v
		}
	}
	for k, v := range nsLabels {
		l[NamespaceLabelKey+k] = v
	}
	l[NamespaceKey] = ns
	return l
}

// Namespace returns the namespace the labels belong to ("" for none).
func (l Labels) Namespace() string { return l[NamespaceKey] }

// PodLabel returns the pod label key (without prefix) if ok.
func (l Labels) PodLabel(key string) (string, bool) {
	v, ok := l[SourcePrefix+key]
	return v, ok
}

// NamespaceLabel returns a namespace label.
func (l Labels) NamespaceLabel(key string) (string, bool) {
	v, ok := l[NamespaceLabelKey+key]
	return v, ok
}

// String is the canonical form: sorted key=value pairs joined by ';'. Two
// label sets are the same identity exactly when their strings are equal.
func (l Labels) String() string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(';')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(l[k])
	}
	return b.String()
}

// Equal reports whether two label sets are the same.
func (l Labels) Equal(o Labels) bool {
	if len(l) != len(o) {
		return false
	}
	for k, v := range l {
		if w, ok := o[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// Hash is a label value (<= 63 chars) naming the label set, used to find
// an identity by its labels with a label selector.
func (l Labels) Hash() string {
	sum := sha256.Sum256([]byte(l.String()))
	return hex.EncodeToString(sum[:20])
}

// Validate checks what the CRD's CEL rules check, so a bad set is refused
// before it reaches the API with an error naming the key.
func (l Labels) Validate() error {
	if len(l) == 0 {
		return fmt.Errorf("securityLabels: empty")
	}
	if len(l) > MaxLabels {
		return fmt.Errorf("securityLabels: %d labels, at most %d", len(l), MaxLabels)
	}
	if _, ok := l[NamespaceKey]; !ok {
		return fmt.Errorf("securityLabels: no %s", NamespaceKey)
	}
	for k, v := range l {
		if !strings.HasPrefix(k, SourcePrefix) {
			return fmt.Errorf("securityLabels[%q]: key lacks the %q prefix", k, SourcePrefix)
		}
		if len(k) > 317 {
			return fmt.Errorf("securityLabels[%q]: key longer than 317", k)
		}
		if len(v) > 63 {
			return fmt.Errorf("securityLabels[%q]: value longer than 63", k)
		}
	}
	return nil
}

// MaxLabels bounds an identity's labels (CRD maxProperties).
const MaxLabels = 128
