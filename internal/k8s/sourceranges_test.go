package k8s

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/fastpath-net/fastpath/internal/loadbalancer"
)

// An invalid loadBalancerSourceRanges entry is a Warning Event naming its
// index; the valid ranges are programmed, and so is the rest of the
// Service. (The apiserver refuses such objects; a fake client does not, and
// an older apiserver or a direct etcd write might not either.)
func TestInvalidSourceRangeIsEventedAndTheRestProgrammed(t *testing.T) {
	svc := service("lb", "10.96.0.9", 0)
	svc.Spec.Type = corev1.ServiceTypeLoadBalancer
	svc.Spec.LoadBalancerSourceRanges = []string{"203.0.113.0/24", "bogus"}
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "198.51.100.9"}}
	h := newHarness(t, svc, slice("lb-1", "lb", 8080, "10.0.1.1"), node("192.168.1.10", "z"))
	u := h.next()
	if ev := h.event(); !strings.Contains(ev, "Warning "+ReasonCannotProgram) || !strings.Contains(ev, "spec.loadBalancerSourceRanges[1]") {
		t.Fatalf("event %q, want a warning naming spec.loadBalancerSourceRanges[1]", ev)
	}
	var lb, cip *loadbalancer.FrontendSpec
	for _, s := range u.Upserted {
		for i := range s.Frontends {
			switch fe := &s.Frontends[i]; fe.Type {
			case loadbalancer.LoadBalancer:
				lb = fe
			case loadbalancer.ClusterIP:
				cip = fe
			}
		}
	}
	if lb == nil || cip == nil || len(lb.Backends) != 1 || len(cip.Backends) != 1 {
		t.Fatalf("update %+v: want the ClusterIP and the LB frontend, each with its backend", u)
	}
	if want := []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}; !slices.Equal(lb.SourceRanges, want) || cip.SourceRanges != nil {
		t.Errorf("LB ranges %v, ClusterIP ranges %v; want %v and none", lb.SourceRanges, cip.SourceRanges, want)
	}
}
