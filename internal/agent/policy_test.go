package agent

import (
	"context"
	"log/slog"
	"maps"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfmap"
	"github.com/fastpath-net/fastpath/internal/datapath/policymap"
	"github.com/fastpath-net/fastpath/internal/identity"
	"github.com/fastpath-net/fastpath/internal/policy"
)

// newTestCtl is a policyCtl without datapath or informers: its handlers
// are called directly, identities go to a fake dynamic client.
func newTestCtl(node string) (*policyCtl, *dynamicfake.FakeDynamicClient) {
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{identity.GVR: "FastpathIdentityList"})
	c := &policyCtl{
		log: slog.Default(), node: node, alloc: &identity.Allocator{Client: dyn},
		ids: map[string][]identity.ID{}, local: map[policy.PodName]bool{}, allocating: map[string]bool{},
		nodeIP: map[netip.Prefix]identity.ID{}, nodes: map[string][]netip.Prefix{}, nodeDirty: map[netip.Prefix]bool{},
		kick: make(chan struct{}, 1),
	}
	c.engine = policy.NewEngine(c.identityOf, node)
	return c, dyn
}

// A local pod's label set (pod + namespace labels, as the Engine holds
// them) is allocated; a remote pod's is left to its node; when the
// allocated object arrives, the pod has its identity.
func TestLocalPodGetsIdentity(t *testing.T) {
	c, dyn := newTestCtl("n1")
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "fp-a", Labels: map[string]string{"team": "x"}}}
	pod := func(name, node string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "fp-a", Labels: map[string]string{"app": name}},
			Spec:   corev1.PodSpec{NodeName: node},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1"}}
	}
	c.mu.Lock()
	c.onPod(pod("local", "n1"))
	c.onPod(pod("remote", "n2"))
	c.onNamespace(ns)
	c.mu.Unlock()
	var objs []identity.Object
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && len(objs) < 2; time.Sleep(10 * time.Millisecond) {
		list, err := dyn.Resource(identity.GVR).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		objs = objs[:0]
		for i := range list.Items {
			o, err := identity.ParseObject(&list.Items[i])
			if err != nil {
				t.Fatal(err)
			}
			objs = append(objs, o)
		}
	}
	// The pod was seen before its namespace: first without, then with
	// the namespace's labels; the remote pod not at all.
	want := identity.ForPod("fp-a", ns.Labels, map[string]string{"app": "local"})
	var got *identity.Object
	for i := range objs {
		if objs[i].Labels.Namespace() != "fp-a" {
			t.Errorf("identity %d has labels %s", objs[i].ID, objs[i].Labels)
		}
		if _, ok := objs[i].Labels.PodLabel("app"); ok && objs[i].Labels.Equal(want) {
			got = &objs[i]
		}
		if v, _ := objs[i].Labels.PodLabel("app"); v == "remote" {
			t.Errorf("allocated for the remote pod: %s", objs[i].Labels)
		}
	}
	if got == nil {
		t.Fatalf("no identity for %s among %v", want, objs)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onIdentityObject(*got)
	id, _, ok := c.engine.PodIdentity(policy.PodName{Namespace: "fp-a", Name: "local"})
	if !ok || id != got.ID {
		t.Fatalf("pod identity %v (known %v), want %d", id, ok, got.ID)
	}
}

// Node addresses: this node's is host, the others' remote-node; a removed
// node's entry goes; only what changed is written.
func TestNodeAddressesInIPCache(t *testing.T) {
	c, _ := newTestCtl("n1")
	ipc := bpfmap.NewFake[policymap.IPCacheKey, policymap.IPCacheValue]("fp_ipcache", 16)
	c.maps.IPCache = ipc
	node := func(name, ip string) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}, {Type: corev1.NodeHostName, Address: name}}}}
	}
	want := func(entries map[string]identity.ID) {
		t.Helper()
		got, err := ipc.All()
		if err != nil {
			t.Fatal(err)
		}
		exp := map[policymap.IPCacheKey]policymap.IPCacheValue{}
		for p, id := range entries {
			exp[policymap.IPCacheKeyOf(netip.MustParsePrefix(p))] = policymap.IPCacheValue{Identity: uint32(id)}
		}
		if !maps.Equal(got, exp) {
			t.Fatalf("ipcache %v, want %v", got, exp)
		}
	}
	c.onNode(node("n1", "192.168.50.11"))
	c.onNode(node("n2", "192.168.50.12"))
	if err := c.syncNodeIPs(policy.IPCacheDelta{}); err != nil {
		t.Fatal(err)
	}
	want(map[string]identity.ID{"192.168.50.11/32": identity.Host, "192.168.50.12/32": identity.RemoteNode})
	c.setNode("n2", nil)
	if err := c.syncNodeIPs(policy.IPCacheDelta{}); err != nil {
		t.Fatal(err)
	}
	want(map[string]identity.ID{"192.168.50.11/32": identity.Host})
	if len(c.nodeDirty) != 0 {
		t.Fatalf("dirty after sync: %v", c.nodeDirty)
	}
}
