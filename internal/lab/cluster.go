package lab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"

	"github.com/fastpath-net/fastpath/internal/nettopo"
	"github.com/fastpath-net/fastpath/internal/testenv"
)

const (
	namespace    = "default"
	NodePort     = 30080
	webHTTPPort  = 8000
	webWhoami    = 8080
	cpDir        = "cp"
	adminConfig  = "admin.kubeconfig"
	agentTimeout = 30 * time.Second
)

// startControlPlane runs etcd, kube-apiserver and kube-controller-manager
// detached in the net namespace, where the apiserver listens on the
// underlay address. Without kubelets, the node lifecycle controllers would
// mark the nodes unreachable after 40 s and evict the pods: they are off.
func startControlPlane(ctx context.Context, st *State) error {
	env, err := testenv.Start(ctx, testenv.Options{
		Detached:              true,
		NetNS:                 netNSName(),
		Dir:                   filepath.Join(StateDir, cpDir),
		AdvertiseAddress:      apiserverIP.String(),
		ExtraSANs:             []string{apiserverIP.String()},
		ServiceClusterIPRange: ServiceCIDR.String(),
		ExtraControllerManagerArgs: []string{
			"--controllers=*,-node-lifecycle-controller,-taint-eviction-controller,-node-ipam-controller",
		},
	})
	if err != nil {
		// Start stopped what it had started.
		return fmt.Errorf("control plane: %w", err)
	}
	for name, pid := range env.ProcessIDs() {
		p, err := procOf(pid)
		if err != nil {
			return fmt.Errorf("control plane: %s: %w", name, err)
		}
		st.Processes[name] = p
	}
	if err := st.save(); err != nil {
		return err
	}
	server := "https://" + net.JoinHostPort(apiserverIP.String(), fmt.Sprint(testenv.APIServerPort))
	return env.WriteKubeconfigFor(filepath.Join(StateDir, adminConfig), server, env.Admin)
}

// client talks to the lab's apiserver from inside the external client's
// namespace: the apiserver only listens on the underlay, and the lab never
// sends traffic from the root namespace (nettopo.NS.DialContext says why
// the dialer itself must enter the namespace).
func client() (*kubernetes.Clientset, *nettopo.NS, error) {
	cfg, ext, err := restConfig()
	if err != nil {
		return nil, nil, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		ext.Release()
		return nil, nil, err
	}
	return cs, ext, nil
}

// restConfig is the admin configuration dialing from the external client's
// namespace, which the caller releases.
func restConfig() (*rest.Config, *nettopo.NS, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(StateDir, adminConfig))
	if err != nil {
		return nil, nil, err
	}
	ext, err := nettopo.OpenNS(extNSName())
	if err != nil {
		return nil, nil, err
	}
	cfg.Dial = ext.DialContext
	cfg.Proxy = nil
	cfg.QPS = -1
	return cfg, ext, nil
}

// createNodes registers the nodes with their pod CIDRs and addresses, as
// kubelet and the node IPAM controller would, Ready.
func createNodes(ctx context.Context, cs kubernetes.Interface, nodes int) error {
	for i := 1; i <= nodes; i++ {
		n := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: nodeName(i), Labels: map[string]string{"kubernetes.io/hostname": nodeName(i)}},
			Spec:       corev1.NodeSpec{PodCIDR: podCIDR(i).String(), PodCIDRs: []string{podCIDR(i).String()}},
		}
		if _, err := cs.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create node %s: %w", n.Name, err)
		}
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			cur, err := cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			cur.Status = corev1.NodeStatus{
				Addresses: []corev1.NodeAddress{
					{Type: corev1.NodeInternalIP, Address: nodeIP(i).String()},
					{Type: corev1.NodeHostName, Address: nodeName(i)},
				},
				Conditions: []corev1.NodeCondition{{
					Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "FastpathLab",
					LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now(),
				}},
			}
			_, err = cs.CoreV1().Nodes().UpdateStatus(ctx, cur, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			return fmt.Errorf("node %s status: %w", n.Name, err)
		}
	}
	return nil
}

// registerPod creates the demo pod's Pod object (see registerPodObject).
func registerPod(ctx context.Context, cs kubernetes.Interface, p pod) error {
	c := corev1.Container{Name: p.app, Image: "fastpath.lab/" + p.app}
	if p.app == "web" {
		c.Ports = []corev1.ContainerPort{
			{Name: "http", ContainerPort: webHTTPPort, Protocol: corev1.ProtocolTCP},
			{Name: "whoami", ContainerPort: webWhoami, Protocol: corev1.ProtocolTCP},
			{Name: "whoami-udp", ContainerPort: webWhoami, Protocol: corev1.ProtocolUDP},
		}
	}
	return registerPodObject(ctx, cs, p, map[string]string{"app": p.app}, c)
}

// registerPodObject creates the Pod object of a pod the lab plumbed, with
// these labels and its one container, and writes its status as kubelet
// would once its containers run: Running, Ready, with its IP, so the
// EndpointSlice controller lists it.
func registerPodObject(ctx context.Context, cs kubernetes.Interface, p pod, labels map[string]string, c corev1.Container) error {
	obj := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.name, Namespace: p.namespace(), Labels: labels},
		Spec: corev1.PodSpec{
			NodeName: nodeName(p.node), Containers: []corev1.Container{c},
			AutomountServiceAccountToken: new(bool),
		},
	}
	pods := cs.CoreV1().Pods(p.namespace())
	created, err := pods.Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create pod %s/%s: %w", p.namespace(), p.name, err)
	}
	now := metav1.Now()
	created.Status = corev1.PodStatus{
		Phase: corev1.PodRunning, HostIP: nodeIP(p.node).String(), HostIPs: []corev1.HostIP{{IP: nodeIP(p.node).String()}},
		PodIP: p.ip.String(), PodIPs: []corev1.PodIP{{IP: p.ip.String()}}, StartTime: &now,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		},
		ContainerStatuses: []corev1.ContainerStatus{{
			Name: c.Name, Image: c.Image, ImageID: c.Image, Ready: true, Started: new(bool),
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		}},
	}
	*created.Status.ContainerStatuses[0].Started = true
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := pods.Get(ctx, p.name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Status = created.Status
		_, err = pods.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("pod %s/%s status: %w", p.namespace(), p.name, err)
	}
	return nil
}

// createServices makes the demo Services: web (ClusterIP: HTTP on 80,
// whoami on 7/TCP and 53/UDP), web-nodeport (NodePort 30080) and web-lb
// (LoadBalancer, its ingress IP written as MetalLB would).
func createServices(ctx context.Context, cs kubernetes.Interface) error {
	sel := map[string]string{"app": "web"}
	http := corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP}
	svcs := []*corev1.Service{
		{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: corev1.ServiceSpec{Selector: sel, Ports: []corev1.ServicePort{
			http,
			{Name: "whoami", Port: 7, TargetPort: intstr.FromInt32(webWhoami), Protocol: corev1.ProtocolTCP},
			{Name: "whoami-udp", Port: 53, TargetPort: intstr.FromInt32(webWhoami), Protocol: corev1.ProtocolUDP},
		}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "web-nodeport"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Selector: sel,
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, NodePort: NodePort, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "web-lb"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: sel,
			Ports: []corev1.ServicePort{http}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "web-l2"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: sel,
			Ports: []corev1.ServicePort{http}}},
	}
	ingress := map[string]netip.Addr{"web-lb": LBIP, "web-l2": L2LBIP}
	for _, s := range svcs {
		if _, err := cs.CoreV1().Services(namespace).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create service %s: %w", s.Name, err)
		}
		if s.Spec.Type != corev1.ServiceTypeLoadBalancer {
			continue
		}
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			cur, err := cs.CoreV1().Services(namespace).Get(ctx, s.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			cur.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ingress[s.Name].String()}}
			_, err = cs.CoreV1().Services(namespace).UpdateStatus(ctx, cur, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			return fmt.Errorf("service %s status: %w", s.Name, err)
		}
	}
	return nil
}

// clusterIP returns a Service's ClusterIP.
func clusterIP(ctx context.Context, cs kubernetes.Interface, name string) (netip.Addr, error) {
	s, err := cs.CoreV1().Services(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return netip.Addr{}, err
	}
	return netip.ParseAddr(s.Spec.ClusterIP)
}

// waitEndpoints waits until the EndpointSlice controller lists n ready
// endpoints for the web Service.
func waitEndpoints(ctx context.Context, cs kubernetes.Interface, n int) error {
	deadline := time.Now().Add(agentTimeout)
	for time.Now().Before(deadline) {
		slices, err := cs.DiscoveryV1().EndpointSlices(namespace).List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=web"})
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		ready := 0
		for _, s := range slices.Items {
			for _, e := range s.Endpoints {
				if e.Conditions.Ready != nil && *e.Conditions.Ready {
					ready++
				}
			}
		}
		if ready >= n {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("the EndpointSlice controller did not list %d ready endpoints of web within %s", n, agentTimeout)
}
