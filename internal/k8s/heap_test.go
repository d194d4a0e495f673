package k8s

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"runtime"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"
)

// maxLiveBytesPerService bounds the Go heap the Kubernetes source keeps
// per Service once its first full update is handed out: the informer
// caches (a Service and its EndpointSlice of two endpoints, as kubectl
// apply and the EndpointSlice controller write them) and the watcher's own
// state, measured at 3,000 Services. 5,900 bytes when the caches held whole
// objects, with a namespace index and a slice index by Service, and the
// watcher a copy of every translated Service; 3,050 since they hold only
// what the translation reads, the watcher its own lists of slices by
// Service and a sum per Service. The bound leaves 30 % for map growth steps
// and Go versions; above it, look at a heap profile of this test before
// raising it.
const maxLiveBytesPerService = 4000

func TestLiveHeapPerService(t *testing.T) {
	const n = 3000
	var objs []kruntime.Object
	for i := range n {
		objs = append(objs, appliedService(i), controllerSlice(i))
	}
	client := fake.NewClientset(objs...)
	freshLists(client)
	objs = nil
	before := liveHeap()
	w, err := New(Config{Client: client, NodeName: "node-7", Recorder: record.NewFakeRecorder(10),
		Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	full := make(chan int)
	go func() { done <- w.Run(ctx, func(u Update) { full <- len(u.Upserted) }) }()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v", err)
		}
	}()
	select {
	case got := <-full:
		if got != n {
			t.Fatalf("the full update holds %d Services, want %d", got, n)
		}
	case <-time.After(time.Minute):
		t.Fatal("no full update within a minute")
	}
	per := (int64(liveHeap()) - int64(before)) / n
	t.Logf("the Kubernetes source keeps %d bytes per Service", per)
	if per > maxLiveBytesPerService {
		t.Errorf("the Kubernetes source keeps %d bytes per Service, more than %d", per, maxLiveBytesPerService)
	}
	if per < 1000 { // the caches alone hold more than this: the measure is broken
		t.Errorf("%d bytes per Service cannot be right: is the heap measured?", per)
	}
	runtime.KeepAlive(w)
}

func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// freshLists makes the fake clientset's lists new objects, as decoding an
// apiserver's answer does: the fake's own copies share their strings with
// the objects it holds, which would then not count as the caches'.
func freshLists(c *fake.Clientset) {
	c.PrependReactor("list", "*", func(a k8stesting.Action) (bool, kruntime.Object, error) {
		handled, obj, err := k8stesting.ObjectReaction(c.Tracker())(a)
		if !handled || err != nil {
			return handled, obj, err
		}
		data, err := json.Marshal(obj)
		if err != nil {
			return true, nil, err
		}
		fresh := reflect.New(reflect.TypeOf(obj).Elem()).Interface().(kruntime.Object)
		return true, fresh, json.Unmarshal(data, fresh)
	})
}

// appliedService is Service i as `kubectl apply` leaves it, defaulted by
// the apiserver.
func appliedService(i int) *corev1.Service {
	name, ip := fmt.Sprintf("web-%05d", i), fmt.Sprintf("10.96.%d.%d", 1+i/250, 1+i%250)
	labels := map[string]string{"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "shop", "team": "payments"}
	lastApplied := fmt.Sprintf(`{"apiVersion":"v1","kind":"Service","metadata":{"annotations":{},"labels":`+
		`{"app.kubernetes.io/name":%q,"app.kubernetes.io/part-of":"shop","team":"payments"},"name":%q,"namespace":"shop"},`+
		`"spec":{"ports":[{"name":"http","port":80,"protocol":"TCP","targetPort":8080}],"selector":{"app.kubernetes.io/name":%q}}}`,
		name, name, name)
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: "shop", UID: types.UID(fmt.Sprintf("5d0c6a8e-3f0b-4c1e-9a7d-%012d", i)),
			ResourceVersion: fmt.Sprint(1000 + i), CreationTimestamp: metav1.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC),
			Labels:      labels,
			Annotations: map[string]string{"kubectl.kubernetes.io/last-applied-configuration": lastApplied},
		},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeClusterIP, ClusterIP: ip, ClusterIPs: []string{ip},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(8080)}},
			Selector: map[string]string{"app.kubernetes.io/name": name}, SessionAffinity: corev1.ServiceAffinityNone,
			IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol}, IPFamilyPolicy: ptr.To(corev1.IPFamilyPolicySingleStack),
			InternalTrafficPolicy: ptr.To(corev1.ServiceInternalTrafficPolicyCluster),
		},
	}
}

// controllerSlice is the EndpointSlice the EndpointSlice controller writes
// for Service i with two ready pods.
func controllerSlice(i int) *discoveryv1.EndpointSlice {
	svc := fmt.Sprintf("web-%05d", i)
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: svc + "-x7k2p", GenerateName: svc + "-", Namespace: "shop",
			UID:             types.UID(fmt.Sprintf("8e1f2b3c-4d5e-4f60-8a7b-%012d", i)),
			ResourceVersion: fmt.Sprint(50000 + i), Generation: 1, CreationTimestamp: metav1.Date(2026, 12, 1, 10, 0, 1, 0, time.UTC),
			Labels: map[string]string{discoveryv1.LabelServiceName: svc, discoveryv1.LabelManagedBy: "endpointslice-controller.k8s.io",
				"app.kubernetes.io/name": svc, "app.kubernetes.io/part-of": "shop", "team": "payments"},
			Annotations: map[string]string{corev1.EndpointsLastChangeTriggerTime: "2026-12-01T10:00:01Z"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: svc,
				UID: types.UID(fmt.Sprintf("5d0c6a8e-3f0b-4c1e-9a7d-%012d", i)), Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To(int32(8080))}},
	}
	for j := range 2 {
		pod := fmt.Sprintf("%s-6d5f8b7c9-%05d", svc, j)
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{fmt.Sprintf("10.244.%d.%d", j, 1+i%250)},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
			NodeName:   ptr.To(fmt.Sprintf("node-%d", j)), Zone: ptr.To("zone-a"),
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "shop", Name: pod,
				UID: types.UID(fmt.Sprintf("9f2a3b4c-5d6e-4f70-8b9c-%06d%06d", i, j))},
		})
	}
	return s
}
