package main

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
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
	ports    []int32 // the port service i's endpoints have now
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
				if err := o.create(ctx, i); err != nil {
					errc <- err
					cancel()
					return
				}
			}
		}()
	}
	var err error
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
	case err = <-errc:
	default:
		err = ctx.Err()
	}
	if err != nil {
		o.vips, o.slices, o.ports = o.vips[:have], o.slices[:have], o.ports[:have]
		return 0, err
	}
	return time.Since(start), nil
}

// create makes Service i (ClusterIP, port 80, no selector) and its
// hand-made EndpointSlice with both backends.
func (o *objects) create(ctx context.Context, i int) error {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: svcName(i), Namespace: kubeNamespace},
		Spec: corev1.ServiceSpec{
			// Chosen here, so every run's VIPs are the same. (Whether it
			// makes creation faster could not be told on the busy VM:
			// 5,000 Services took 2m52s without, 2m30s and 43s with.)
			ClusterIP: clusterIP(i).String(),
			Ports: []corev1.ServicePort{{
				Port: svcPort, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(portA),
			}},
		},
	}
	got, err := o.client.CoreV1().Services(kubeNamespace).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create service %s: %w", svc.Name, err)
	}
	vip, err := netip.ParseAddr(got.Spec.ClusterIP)
	if err != nil {
		return fmt.Errorf("service %s: clusterIP %q: %w", svc.Name, got.Spec.ClusterIP, err)
	}
	sl, err := o.client.DiscoveryV1().EndpointSlices(kubeNamespace).Create(ctx, slice(i, portA, o.backends), metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create endpointslice of %s: %w", svc.Name, err)
	}
	o.vips[i], o.slices[i], o.ports[i] = vip, sl, portA
	return nil
}

// clusterIP is Service i's address in the control plane's 10.96.0.0/16,
// from 10.96.0.16 up (10.96.0.1 is the kubernetes Service's).
func clusterIP(i int) netip.Addr {
	v := 10<<24 | 96<<16 | uint32(16+i)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func slice(i int, port int32, backends [2]netip.Addr) *discoveryv1.EndpointSlice {
	name, proto, ready := "", corev1.ProtocolTCP, true
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: svcName(i) + "-1", Namespace: kubeNamespace,
			Labels: map[string]string{
				discoveryv1.LabelServiceName: svcName(i),
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
