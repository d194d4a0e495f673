package main

import (
	"context"
	"fmt"
	"net/netip"
	"sync"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"github.com/fastpath-net/fastpath/internal/lab"
)

// The bulk of the cluster: namespaces, Pod objects with status.podIP set
// and NetworkPolicies, all made deterministically from their index. The
// Pods have no container behind them (no kubelet exists): they are what
// the agents see of a pod on their node or another, which is all the
// policy computation reads. Their addresses come from bulkPodNet, outside
// the lab's pod CIDRs, so they never collide with a real pod.

// bulkPodNet holds the bulk pods' addresses.
var bulkPodNet = netip.MustParsePrefix("10.200.0.0/16")

// Label keys the benchmark sets.
const (
	labelApp     = "app"
	labelTier    = "tier"
	labelVersion = "version"
	labelTeam    = "team"
	labelEnv     = "env"
)

const apps = 20

// nsName is bulk namespace i (0-based); the lab's own namespace, where the
// real pods live, takes its share of the bulk pods and policies too.
func nsName(i int) string {
	if i == 0 {
		return lab.Namespace
	}
	return fmt.Sprintf("pb-%d", i)
}

func nsLabels(i int) map[string]string {
	return map[string]string{labelTeam: fmt.Sprintf("t%d", i%5), labelEnv: []string{"prod", "staging"}[i%2]}
}

func appName(a int) string { return fmt.Sprintf("app%d", a%apps) }

func tierOf(a int) string { return []string{"frontend", "backend", "db"}[a%3] }

// bulkPod is bulk pod j of n over the namespaces and nodes.
func bulkPod(j, namespaces, nodes int) *corev1.Pod {
	a := j / namespaces
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: nsName(j % namespaces), Name: fmt.Sprintf("bulk-%d", j),
			Labels: map[string]string{labelApp: appName(a), labelTier: tierOf(a % apps), labelVersion: fmt.Sprintf("v%d", a/apps%2+1)},
		},
		Spec: corev1.PodSpec{
			NodeName: lab.NodeName(j%nodes + 1),
			Containers: []corev1.Container{{Name: "app", Image: "fastpath.bench/app", Ports: []corev1.ContainerPort{
				{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP},
				{Name: "metrics", ContainerPort: 9090, Protocol: corev1.ProtocolTCP},
			}}},
			AutomountServiceAccountToken: new(bool),
		},
	}
}

// bulkPodIP is bulk pod j's address.
func bulkPodIP(j int) netip.Addr {
	b := bulkPodNet.Addr().As4()
	b[2], b[3] = byte(j/250), byte(j%250+1)
	return netip.AddrFrom4(b)
}

func runningStatus(ip netip.Addr, nodeIP string) corev1.PodStatus {
	now := metav1.Now()
	return corev1.PodStatus{
		Phase: corev1.PodRunning, HostIP: nodeIP, PodIP: ip.String(), PodIPs: []corev1.PodIP{{IP: ip.String()}}, StartTime: &now,
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now}},
	}
}

func tcp(port int) networkingv1.NetworkPolicyPort {
	p, proto := intstr.FromInt32(int32(port)), corev1.ProtocolTCP
	return networkingv1.NetworkPolicyPort{Protocol: &proto, Port: &p}
}

func sel(kv ...string) *metav1.LabelSelector {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return &metav1.LabelSelector{MatchLabels: m}
}

// bulkPolicy is policy k, in namespace k % namespaces, selecting the pods
// of one app there. Five shapes in turn, the ones real clusters are made
// of: from another app of the namespace on a port; from a team's
// namespaces on a named port; from an app in prod namespaces (namespace
// and pod selector combined) on a port range; egress to a CIDR with an
// exception on 443; from a CIDR or any pod of the namespace on UDP 53 and
// TCP 9090, selecting two apps by expression.
func bulkPolicy(k, namespaces int) *networkingv1.NetworkPolicy {
	a := k / namespaces
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: nsName(k % namespaces), Name: fmt.Sprintf("pb-bulk-%d", k)}}
	np.Spec.PodSelector = *sel(labelApp, appName(a))
	ingress := func(peers []networkingv1.NetworkPolicyPeer, ports ...networkingv1.NetworkPolicyPort) {
		np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: peers, Ports: ports}}
	}
	switch k % 5 {
	case 0:
		ingress([]networkingv1.NetworkPolicyPeer{{PodSelector: sel(labelApp, appName(a+1))}}, tcp(8080))
	case 1:
		named, proto := intstr.FromString("http"), corev1.ProtocolTCP
		ingress([]networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel(labelTeam, fmt.Sprintf("t%d", k/5%5))}},
			networkingv1.NetworkPolicyPort{Protocol: &proto, Port: &named})
	case 2:
		p := tcp(8000)
		end := int32(8000 + 16*(1+k%4))
		p.EndPort = &end
		ingress([]networkingv1.NetworkPolicyPeer{{NamespaceSelector: sel(labelEnv, "prod"), PodSelector: sel(labelTier, tierOf(a+1))}}, p)
	case 3:
		np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
		np.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{
			To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{
				CIDR: fmt.Sprintf("172.16.%d.0/24", k%256), Except: []string{fmt.Sprintf("172.16.%d.128/25", k%256)},
			}}},
			Ports: []networkingv1.NetworkPolicyPort{tcp(443)},
		}}
	case 4:
		np.Spec.PodSelector = metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: labelApp, Operator: metav1.LabelSelectorOpIn, Values: []string{appName(a), appName(a + 2)}},
		}}
		udp, dns := corev1.ProtocolUDP, intstr.FromInt32(53)
		ingress([]networkingv1.NetworkPolicyPeer{
			{IPBlock: &networkingv1.IPBlock{CIDR: fmt.Sprintf("192.168.%d.0/24", 100+k%100)}},
			{PodSelector: &metav1.LabelSelector{}},
		}, networkingv1.NetworkPolicyPort{Protocol: &udp, Port: &dns}, tcp(9090))
	}
	return np
}

// createBulk makes the namespaces (labelling the lab's), the pods with
// their status and the policies, `parallel` requests at a time.
func createBulk(ctx context.Context, cs kubernetes.Interface, cfg config, nodeIPs map[string]string) error {
	for i := 0; i < cfg.Namespaces; i++ {
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			ns, err := cs.CoreV1().Namespaces().Get(ctx, nsName(i), metav1.GetOptions{})
			if err != nil {
				ns = &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nsName(i)}}
				ns.Labels = nsLabels(i)
				_, err = cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
				return err
			}
			if ns.Labels == nil {
				ns.Labels = map[string]string{}
			}
			for k, v := range nsLabels(i) {
				ns.Labels[k] = v
			}
			_, err = cs.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			return fmt.Errorf("namespace %s: %w", nsName(i), err)
		}
	}
	if err := parallel(ctx, cfg.bulkPods(), func(j int) error {
		p := bulkPod(j, cfg.Namespaces, cfg.Nodes)
		created, err := cs.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("pod %s/%s: %w", p.Namespace, p.Name, err)
		}
		created.Status = runningStatus(bulkPodIP(j), nodeIPs[p.Spec.NodeName])
		if _, err := cs.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("pod %s/%s status: %w", p.Namespace, p.Name, err)
		}
		return nil
	}); err != nil {
		return err
	}
	return parallel(ctx, cfg.Policies, func(k int) error {
		np := bulkPolicy(k, cfg.Namespaces)
		if _, err := cs.NetworkingV1().NetworkPolicies(np.Namespace).Create(ctx, np, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("policy %s/%s: %w", np.Namespace, np.Name, err)
		}
		return nil
	})
}

// parallel runs fn(0..n-1), eight at a time; the first error wins.
func parallel(ctx context.Context, n int, fn func(int) error) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs error
	)
	next := make(chan int)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(i); err != nil {
					mu.Lock()
					if errs == nil {
						errs = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < n && ctx.Err() == nil; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	if errs == nil {
		errs = ctx.Err()
	}
	return errs
}
