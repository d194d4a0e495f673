package cni

import (
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/fastpath-net/fastpath/internal/testenv"
)

// TestPodCIDRFromNode: with Kubernetes as the source and no --pod-cidr, the
// agent reports not ready (STATUS 50, ADD 11) until the Node gets
// spec.podCIDRs, then allocates from them. The agent runs with the
// system:kube-proxy identity, which may read Nodes.
func TestPodCIDRFromNode(t *testing.T) {
	n := newNode(t, "")
	env := testenv.StartForTest(t, testenv.Options{})
	n.kubeconfig = filepath.Join(t.TempDir(), "agent.kubeconfig")
	if err := env.WriteKubeconfig(n.kubeconfig, env.KubeProxy); err != nil {
		t.Fatal(err)
	}
	n.nodeName = "cni-" + n.id
	cs := env.Clientset
	if _, err := cs.CoreV1().Nodes().Create(t.Context(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.nodeName}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	n.startAgent()
	wantCode(t, n.status(), 50, "no pod CIDR yet")
	pod := n.newPod("pod")
	r := rt(pod, "c-"+n.id+"-pod")
	_, err := n.add(r)
	wantCode(t, err, 11, "no pod CIDR yet")
	n.assertClean()

	// What the controller-manager's node IPAM does.
	patch := []byte(`{"spec":{"podCIDR":"10.244.21.0/24","podCIDRs":["10.244.21.0/24"]}}`)
	if _, err := cs.CoreV1().Nodes().Patch(t.Context(), n.nodeName, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for n.status() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("STATUS still not ready 15s after the Node got its pod CIDR: %v", n.status())
		}
		time.Sleep(100 * time.Millisecond)
	}
	ip := resultIP(t, n.mustAdd(r))
	if !netip.MustParsePrefix("10.244.21.0/24").Contains(ip) {
		t.Fatalf("address %s is not from the Node's pod CIDR", ip)
	}
	if err := n.del(r); err != nil {
		t.Fatal(err)
	}
	n.assertClean()
}
