package main

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/fastpath-net/fastpath/internal/k8s/svctranslate"
)

const (
	kubeNamespace = "bench"
	nodeName      = "fp-bench-node"
	svcPort       = 80
	// Every endpoint serves on both ports; a change moves a Service's
	// endpoints from one to the other, and the answer names the port.
	portA, portB  = 8080, 8081
	createWorkers = 16
)

// objects are the Services and their EndpointSlices, created once and
// shared by every contender: creating Services is slow in apiserver 1.37.
type objects struct {
	client   kubernetes.Interface
	backends [2]netip.Addr
	vips     []netip.Addr
	slices   []*discoveryv1.EndpointSlice
	ports    []int32      // the port service i's endpoints have now
	side     []netip.Addr // VIPs of the side-by-side phase's Services
}

func newObjects(ctx context.Context, client kubernetes.Interface, backends [2]netip.Addr) (*objects, error) {
	o := &objects{client: client, backends: backends}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: kubeNamespace}}
	if _, err := client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("create namespace: %w", err)
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: nodeName},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.250.1.1"}}},
	}
	created, err := client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create node: %w", err)
	}
	created.Status = node.Status
	if _, err := client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return nil, fmt.Errorf("node status: %w", err)
	}
	return o, nil
}

func svcName(i int) string { return fmt.Sprintf("svc-%05d", i) }

// grow creates Services and slices until there are n, createWorkers at a
// time, and returns how long it took.
func (o *objects) grow(ctx context.Context, n int, logf func(string, ...any)) (time.Duration, error) {
	have := len(o.vips)
	if n <= have {
		return 0, nil
	}
	start := time.Now()
	o.vips = append(o.vips, make([]netip.Addr, n-have)...)
	o.slices = append(o.slices, make([]*discoveryv1.EndpointSlice, n-have)...)
	o.ports = append(o.ports, make([]int32, n-have)...)
	err := createAll(ctx, have, n, o.create, logf)
	if err != nil {
		o.vips, o.slices, o.ports = o.vips[:have], o.slices[:have], o.ports[:have]
		return 0, err
	}
	return time.Since(start), nil
}

// createAll calls create for have..n-1, createWorkers at a time.
func createAll(ctx context.Context, have, n int, create func(context.Context, int) error, logf func(string, ...any)) error {
	start := time.Now()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	next := make(chan int)
	errc := make(chan error, createWorkers)
	var wg sync.WaitGroup
	for range createWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := create(ctx, i); err != nil {
					errc <- err
					cancel()
					return
				}
			}
		}()
	}
feed:
	for i := have; i < n; i++ {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
		if done := i + 1 - have; done%1000 == 0 {
			logf("  created %d of %d Services (%s)", i+1, n, time.Since(start).Round(time.Second))
		}
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return ctx.Err()
	}
}

// create makes Service i (ClusterIP, port 80, no selector) and its
// hand-made EndpointSlice with both backends.
func (o *objects) create(ctx context.Context, i int) error {
	vip, sl, err := o.createService(ctx, svcName(i), clusterIP(i), nil)
	if err != nil {
		return err
	}
	o.vips[i], o.slices[i], o.ports[i] = vip, sl, portA
	return nil
}

// The side-by-side phase's Services: labelled for the second fastpath
// agent only (--service-proxy-name), so kube-proxy and the main agent
// never see them, and addressed from 10.96.240.0, above every N's
// clusterIP.
const (
	sideProxyName = "fp-bench-side"
	sideMax       = 4096
)

func sideName(i int) string { return fmt.Sprintf("side-%05d", i) }

func sideIP(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 96, byte(240 + i/256), byte(i % 256)})
}

// growSide creates the n Services of the side-by-side phase (once).
func (o *objects) growSide(ctx context.Context, n int, logf func(string, ...any)) error {
	o.side = make([]netip.Addr, n)
	labels := map[string]string{svctranslate.LabelServiceProxyName: sideProxyName}
	return createAll(ctx, 0, n, func(ctx context.Context, i int) error {
		vip, _, err := o.createService(ctx, sideName(i), sideIP(i), labels)
		o.side[i] = vip
		return err
	}, logf)
}

// createService makes a Service (ClusterIP ip, port 80, no selector) and
// its hand-made EndpointSlice with both backends on portA, both with labels
// added to their own.
func (o *objects) createService(ctx context.Context, name string, ip netip.Addr, labels map[string]string) (netip.Addr, *discoveryv1.EndpointSlice, error) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: kubeNamespace, Labels: labels},
		Spec: corev1.ServiceSpec{
			// Chosen here, so every run's VIPs are the same. (Whether it
			// makes creation faster could not be told on the busy VM:
			// 5,000 Services took 2m52s without, 2m30s and 43s with.)
			ClusterIP: ip.String(),
			Ports: []corev1.ServicePort{{
				Port: svcPort, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(portA),
			}},
		},
	}
	got, err := o.client.CoreV1().Services(kubeNamespace).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		return netip.Addr{}, nil, fmt.Errorf("create service %s: %w", svc.Name, err)
	}
	vip, err := netip.ParseAddr(got.Spec.ClusterIP)
	if err != nil {
		return netip.Addr{}, nil, fmt.Errorf("service %s: clusterIP %q: %w", svc.Name, got.Spec.ClusterIP, err)
	}
	sl := slice(name, portA, o.backends)
	maps.Copy(sl.Labels, labels)
	if sl, err = o.client.DiscoveryV1().EndpointSlices(kubeNamespace).Create(ctx, sl, metav1.CreateOptions{}); err != nil {
		return netip.Addr{}, nil, fmt.Errorf("create endpointslice of %s: %w", svc.Name, err)
	}
	return vip, sl, nil
}

// clusterIP is Service i's address in the control plane's 10.96.0.0/16,
// from 10.96.0.16 up (10.96.0.1 is the kubernetes Service's).
func clusterIP(i int) netip.Addr {
	v := 10<<24 | 96<<16 | uint32(16+i)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func slice(svc string, port int32, backends [2]netip.Addr) *discoveryv1.EndpointSlice {
	name, proto, ready := "", corev1.ProtocolTCP, true
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: svc + "-1", Namespace: kubeNamespace,
			Labels: map[string]string{
				discoveryv1.LabelServiceName: svc,
				discoveryv1.LabelManagedBy:   "fp-bench",
			},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Protocol: &proto, Port: &port}},
	}
	for _, b := range backends {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{b.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready},
		})
	}
	return s
}

// flip moves service i's endpoints to the other port and returns the new
// port and when the apiserver accepted the change (its answer arrived).
func (o *objects) flip(ctx context.Context, i int) (int32, time.Time, error) {
	port := int32(portB)
	if o.ports[i] == portB {
		port = portA
	}
	s := o.slices[i].DeepCopy()
	s.Ports[0].Port = &port
	got, err := o.client.DiscoveryV1().EndpointSlices(kubeNamespace).Update(ctx, s, metav1.UpdateOptions{})
	accepted := time.Now()
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("update endpointslice of %s: %w", svcName(i), err)
	}
	o.slices[i], o.ports[i] = got, port
	return port, accepted, nil
}
