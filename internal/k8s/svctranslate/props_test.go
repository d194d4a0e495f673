package svctranslate_test

import (
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"golang.org/x/tools/txtar"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/fastpath-net/fastpath/internal/k8s/svctranslate"
)

// TestOrderAndPurity checks two properties on every golden input: the
// result does not depend on the order slices are given in (informers hand
// them over in any order), and Translate does not modify its inputs (they
// are the informers' shared cache objects).
func TestOrderAndPurity(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.txtar")
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txtar"), func(t *testing.T) {
			ar, err := txtar.ParseFile(file)
			if err != nil {
				t.Fatal(err)
			}
			in := parseInput(t, ar)
			reversed := slices.Clone(in.slices)
			slices.Reverse(reversed)
			for _, svc := range in.svcs {
				svcCopy, slicesCopy := svc.DeepCopy(), deepCopySlices(in.slices)
				a := svctranslate.Translate(svc, in.slices, in.node)
				b := svctranslate.Translate(svc, reversed, in.node)
				if !reflect.DeepEqual(a, b) {
					t.Errorf("%s: result depends on slice order:\n%+v\n%+v", svc.Name, a, b)
				}
				if !reflect.DeepEqual(svc, svcCopy) || !reflect.DeepEqual(in.slices, slicesCopy) {
					t.Errorf("%s: Translate modified its input", svc.Name)
				}
			}
		})
	}
}

func deepCopySlices(in []*discoveryv1.EndpointSlice) []*discoveryv1.EndpointSlice {
	var out []*discoveryv1.EndpointSlice // nil for nil, so DeepEqual compares contents
	for _, s := range in {
		out = append(out, s.DeepCopy())
	}
	return out
}

// TestNodeFromObject: only InternalIP and ExternalIP addresses count, in
// the Node's order, without duplicates.
func TestNodeFromObject(t *testing.T) {
	node := &corev1.Node{}
	node.Labels = map[string]string{corev1.LabelTopologyZone: "z1"}
	node.Status.Addresses = []corev1.NodeAddress{
		{Type: corev1.NodeHostName, Address: "n1"},
		{Type: corev1.NodeExternalIP, Address: "203.0.113.5"},
		{Type: corev1.NodeInternalIP, Address: "10.1.1.1"},
		{Type: corev1.NodeInternalIP, Address: "203.0.113.5"},
		{Type: corev1.NodeInternalDNS, Address: "n1.internal"},
	}
	got := svctranslate.NodeFromObject("n1", node, nil)
	if got.Zone != "z1" || got.Name != "n1" || len(got.Addresses) != 2 ||
		got.Addresses[0].String() != "203.0.113.5" || got.Addresses[1].String() != "10.1.1.1" {
		t.Fatalf("got %+v", got)
	}
	if n := svctranslate.NodeFromObject("n1", nil, nil); n.Name != "n1" || len(n.Addresses) != 0 {
		t.Fatalf("nil node: got %+v", n)
	}
}
