package identity_test

import (
	"testing"

	"github.com/fastpath-net/fastpath/internal/identity"
)

func TestForPod(t *testing.T) {
	l := identity.ForPod("fp-x", map[string]string{"team": "a"}, map[string]string{
		"app": "web", "pod-template-hash": "abc",
		"io.kubernetes.pod.namespace":             "kube-system", // a pod claiming another namespace
		"io.kubernetes.pod.namespace.labels.team": "b",
	})
	want := "k8s:app=web;k8s:io.kubernetes.pod.namespace=fp-x;k8s:io.kubernetes.pod.namespace.labels.team=a"
	if l.String() != want {
		t.Errorf("labels = %s\nwant     %s", l, want)
	}
	if err := l.Validate(); err != nil {
		t.Error(err)
	}
	if !l.Equal(identity.ForPod("fp-x", map[string]string{"team": "a"}, map[string]string{"app": "web"})) {
		t.Error("pod-template-hash changed the identity")
	}
	if len(l.Hash()) > 63 {
		t.Errorf("hash %q is not a label value", l.Hash())
	}
	if err := (identity.Labels{"k8s:app": "x"}).Validate(); err == nil {
		t.Error("labels without a namespace validated")
	}
}

func TestIDRanges(t *testing.T) {
	for _, c := range []struct {
		id                       identity.ID
		reserved, cluster, local bool
		str                      string
	}{
		{identity.World, true, false, false, "world"},
		{identity.RemoteNode, true, false, false, "remote-node"},
		{256, false, true, false, "256"},
		{65535, false, true, false, "65535"},
		{identity.MinLocal, false, false, true, "16777216"},
	} {
		if c.id.IsReserved() != c.reserved || c.id.IsCluster() != c.cluster || c.id.IsLocal() != c.local || c.id.String() != c.str {
			t.Errorf("%d: reserved %v cluster %v local %v %q", c.id, c.id.IsReserved(), c.id.IsCluster(), c.id.IsLocal(), c.id)
		}
	}
	for i := range 1000 {
		l := identity.ForPod("ns", nil, map[string]string{"i": string(rune('a' + i%26)), "j": string(rune('a' + i/26))})
		if s := identity.DefaultStart(l); !s.IsCluster() {
			t.Fatalf("DefaultStart %d outside the cluster range", s)
		}
	}
}
