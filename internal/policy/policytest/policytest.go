// Package policytest holds what tests of NetworkPolicy enforcement share:
// a World of Kubernetes objects read from YAML (the golden cases of
// internal/policy/testdata), fed into a policy.Engine, and an Oracle that
// decides connections straight from the API objects, sharing no code with
// the Engine. internal/policy checks Engine.Trace against it, and
// internal/datapath/policymap the BPF program.
package policytest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/fastpath-net/fastpath/internal/fpnetpol"
	"github.com/fastpath-net/fastpath/internal/identity"
	"github.com/fastpath-net/fastpath/internal/policy"
)

// World is the objects a case has applied so far.
type World struct {
	NS   map[string]*corev1.Namespace
	Pods map[string]*corev1.Pod // by namespace/name
	Pols map[string]*networkingv1.NetworkPolicy
}

// NewWorld returns an empty World.
func NewWorld() *World {
	return &World{NS: map[string]*corev1.Namespace{}, Pods: map[string]*corev1.Pod{}, Pols: map[string]*networkingv1.NetworkPolicy{}}
}

// Apply upserts the YAML documents (Namespace, Pod, NetworkPolicy) into
// the World and the Engine. Namespaces get kubernetes.io/metadata.name as
// the apiserver gives it.
func (w *World) Apply(eng *policy.Engine, data []byte) error {
	return Documents(data, func(kind string, doc []byte) error {
		switch kind {
		case "Namespace":
			var ns corev1.Namespace
			if err := strict(doc, &ns); err != nil {
				return err
			}
			if ns.Labels == nil {
				ns.Labels = map[string]string{}
			}
			ns.Labels["kubernetes.io/metadata.name"] = ns.Name
			w.NS[ns.Name] = &ns
			eng.UpsertNamespace(&ns)
		case "Pod":
			var p corev1.Pod
			if err := strict(doc, &p); err != nil {
				return err
			}
			w.Pods[p.Namespace+"/"+p.Name] = &p
			eng.UpsertPod(&p)
		case "NetworkPolicy":
			var np networkingv1.NetworkPolicy
			if err := strict(doc, &np); err != nil {
				return err
			}
			w.Pols[np.Namespace+"/"+np.Name] = &np
			eng.UpsertPolicy(&np)
		case "FastpathNetworkPolicy", "FastpathClusterwideNetworkPolicy":
			// Not in the Oracle: cases with them say no-oracle.
			var obj struct {
				APIVersion string            `json:"apiVersion"`
				Kind       string            `json:"kind"`
				Metadata   metav1.ObjectMeta `json:"metadata"`
				Spec       fpnetpol.Spec     `json:"spec"`
			}
			if err := strict(doc, &obj); err != nil {
				return err
			}
			ns := obj.Metadata.Namespace
			if kind == "FastpathClusterwideNetworkPolicy" {
				ns = ""
			}
			eng.UpsertFastpathPolicy(&fpnetpol.Policy{Namespace: ns, Name: obj.Metadata.Name, Spec: obj.Spec})
		default:
			return fmt.Errorf("kind %q", kind)
		}
		return nil
	})
}

// Documents calls fn with each YAML document of data and its kind; empty
// documents are skipped.
func Documents(data []byte, fn func(kind string, doc []byte) error) error {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := r.Read()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		var meta struct{ Kind string }
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			return err
		}
		if meta.Kind == "" {
			continue
		}
		if err := fn(meta.Kind, doc); err != nil {
			return err
		}
	}
}

func strict(doc []byte, v any) error {
	if err := yaml.UnmarshalStrict(doc, v); err != nil {
		return fmt.Errorf("%v in\n%s", err, doc)
	}
	return nil
}

// Delete removes objects named one a line: "namespace N", "pod NS/N",
// "networkpolicy NS/N", "fastpathnetworkpolicy NS/N",
// "fastpathclusterwidenetworkpolicy N".
func (w *World) Delete(eng *policy.Engine, data []byte) error {
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		kind, name, _ := strings.Cut(line, " ")
		ns, n, _ := strings.Cut(name, "/")
		switch kind {
		case "namespace":
			delete(w.NS, name)
			eng.DeleteNamespace(name)
		case "pod":
			delete(w.Pods, name)
			eng.DeletePod(policy.PodName{Namespace: ns, Name: n})
		case "networkpolicy":
			delete(w.Pols, name)
			eng.DeletePolicy(ns, n)
		case "fastpathnetworkpolicy":
			eng.DeleteFastpathPolicy(ns, n)
		case "fastpathclusterwidenetworkpolicy":
			eng.DeleteFastpathPolicy("", name)
		default:
			return fmt.Errorf("delete %q", line)
		}
	}
	return nil
}

// PodNames returns the pods' namespace/name, sorted.
func (w *World) PodNames() []string {
	out := make([]string, 0, len(w.Pods))
	for k := range w.Pods {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Probe is one cell of a reachability matrix.
type Probe struct {
	From, To string // namespace/name
	Proto    policy.Proto
	Port     uint16
}

// Matrix lists every probe between distinct pods on ports 80 and 81 over
// TCP, UDP and SCTP, as the upstream e2e suite probes.
func (w *World) Matrix() []Probe {
	names := w.PodNames()
	var out []Probe
	for _, from := range names {
		for _, to := range names {
			if from == to {
				continue
			}
			for _, proto := range []policy.Proto{policy.TCP, policy.UDP, policy.SCTP} {
				for _, port := range []uint16{80, 81} {
					out = append(out, Probe{from, to, proto, port})
				}
			}
		}
	}
	return out
}

// Oracle decides one probe straight from the API objects, the way the
// NetworkPolicy documentation reads: no identities, no tables.
func (w *World) Oracle(pr Probe) bool {
	src, dst, proto, port := w.Pods[pr.From], w.Pods[pr.To], pr.Proto, pr.Port
	return allowedBy(w, src, networkingv1.PolicyTypeEgress, dst, proto, port) &&
		allowedBy(w, dst, networkingv1.PolicyTypeIngress, src, proto, port)
}

// allowedBy: is traffic between subject (whose policies apply) and peer
// allowed in direction dir? target is the pod whose ports are dialled.
func allowedBy(w *World, subject *corev1.Pod, dir networkingv1.PolicyType, peer *corev1.Pod, proto policy.Proto, port uint16) bool {
	target := subject
	if dir == networkingv1.PolicyTypeEgress {
		target = peer
	}
	selected := false
	for _, np := range w.Pols {
		if np.Namespace != subject.Namespace || !selectorMatches(&np.Spec.PodSelector, subject.Labels) || !hasType(np, dir) {
			continue
		}
		selected = true
		if dir == networkingv1.PolicyTypeIngress {
			for _, r := range np.Spec.Ingress {
				if peersMatch(w, np.Namespace, r.From, peer) && portsMatch(r.Ports, target, proto, port) {
					return true
				}
			}
		} else {
			for _, r := range np.Spec.Egress {
				if peersMatch(w, np.Namespace, r.To, peer) && portsMatch(r.Ports, target, proto, port) {
					return true
				}
			}
		}
	}
	return !selected
}

func hasType(np *networkingv1.NetworkPolicy, t networkingv1.PolicyType) bool {
	if len(np.Spec.PolicyTypes) == 0 {
		return t == networkingv1.PolicyTypeIngress || len(np.Spec.Egress) > 0
	}
	for _, x := range np.Spec.PolicyTypes {
		if x == t {
			return true
		}
	}
	return false
}

func selectorMatches(ls *metav1.LabelSelector, l map[string]string) bool {
	s, err := metav1.LabelSelectorAsSelector(ls)
	return err == nil && s.Matches(labels.Set(l))
}

func peersMatch(w *World, polNS string, peers []networkingv1.NetworkPolicyPeer, p *corev1.Pod) bool {
	if len(peers) == 0 {
		return true
	}
	for _, pe := range peers {
		if pe.IPBlock != nil {
			if ipBlockMatches(pe.IPBlock, p) {
				return true
			}
			continue
		}
		nsOK := p.Namespace == polNS
		if pe.NamespaceSelector != nil {
			ns := w.NS[p.Namespace]
			nsOK = ns != nil && selectorMatches(pe.NamespaceSelector, ns.Labels)
		}
		podOK := pe.PodSelector == nil || selectorMatches(pe.PodSelector, p.Labels)
		if nsOK && podOK {
			return true
		}
	}
	return false
}

func ipBlockMatches(b *networkingv1.IPBlock, p *corev1.Pod) bool {
	cidr, err := netip.ParsePrefix(b.CIDR)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(p.Status.PodIP)
	if err != nil || !cidr.Contains(ip) {
		return false
	}
	for _, e := range b.Except {
		if x, err := netip.ParsePrefix(e); err == nil && x.Contains(ip) {
			return false
		}
	}
	return true
}

func portsMatch(ports []networkingv1.NetworkPolicyPort, target *corev1.Pod, proto policy.Proto, port uint16) bool {
	if len(ports) == 0 {
		return true
	}
	for _, pp := range ports {
		pr := corev1.ProtocolTCP
		if pp.Protocol != nil {
			pr = *pp.Protocol
		}
		if p, _ := policy.ParseProto(string(pr)); p != proto {
			continue
		}
		if pp.Port == nil {
			return true
		}
		if pp.Port.StrVal != "" {
			for _, c := range target.Spec.Containers {
				for _, cp := range c.Ports {
					cpr := cp.Protocol
					if cpr == "" {
						cpr = corev1.ProtocolTCP
					}
					if cp.Name == pp.Port.StrVal && cpr == pr && uint16(cp.ContainerPort) == port {
						return true
					}
				}
			}
			continue
		}
		end := pp.Port.IntVal
		if pp.EndPort != nil {
			end = *pp.EndPort
		}
		if int32(port) >= pp.Port.IntVal && int32(port) <= end {
			return true
		}
	}
	return false
}

// BaseYAML is testdata/base.yaml of internal/policy: the upstream e2e
// topology (namespaces x, y, z with pods a, b, c each).
func BaseYAML() ([]byte, error) {
	_, file, _, _ := runtime.Caller(0)
	return os.ReadFile(filepath.Join(filepath.Dir(file), "..", "testdata", "base.yaml"))
}

// NewBase returns an Engine (every pod an endpoint) and World holding the
// base topology and then the YAML in extra.
func NewBase(identityOf func(identity.Labels) identity.ID, extra string) (*policy.Engine, *World, error) {
	eng := policy.NewEngine(identityOf, "")
	w := NewWorld()
	base, err := BaseYAML()
	if err != nil {
		return nil, nil, err
	}
	if err := w.Apply(eng, base); err != nil {
		return nil, nil, err
	}
	if err := w.Apply(eng, []byte(extra)); err != nil {
		return nil, nil, err
	}
	return eng, w, nil
}
