package k8s

import (
	"hash/maphash"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/fastpath-net/fastpath/internal/loadbalancer"
)

// The sum that stands for a delivered Service changes with every field of
// FrontendSpec: zeroing any one of them gives another sum. A field added
// to FrontendSpec fails here until sum hashes it (and spec sets it).
func TestSumCoversEveryField(t *testing.T) {
	w := &Watcher{seed: maphash.MakeSeed()}
	spec := loadbalancer.FrontendSpec{
		Frontend: loadbalancer.Frontend{
			L4Addr: loadbalancer.L4Addr{Addr: netip.MustParseAddr("10.96.0.10"), Port: 80, Proto: loadbalancer.TCP},
			Scope:  loadbalancer.ScopeInternal, Type: loadbalancer.NodePort,
		},
		Backends:        []loadbalancer.Backend{{L4Addr: loadbalancer.L4Addr{Addr: netip.MustParseAddr("10.0.0.1"), Port: 8080, Proto: loadbalancer.TCP}}},
		AffinityTimeout: time.Minute,
		ExtLocal:        true,
		SourceRanges:    []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")},
	}
	base := w.sum([]loadbalancer.FrontendSpec{spec})
	typ := reflect.TypeFor[loadbalancer.FrontendSpec]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		changed := spec
		v := reflect.ValueOf(&changed).Elem().Field(i)
		if v.IsZero() {
			t.Fatalf("the test's spec leaves %s zero: set it", f.Name)
		}
		v.SetZero()
		if w.sum([]loadbalancer.FrontendSpec{changed}) == base {
			t.Errorf("FrontendSpec.%s is not in the sum: a change of it alone would not be delivered", f.Name)
		}
	}
	if w.sum([]loadbalancer.FrontendSpec{spec, spec}) == base || w.sum(nil) == base {
		t.Error("the number of frontends is not in the sum")
	}
	// Where one backend ends and the next list begins counts.
	two := spec
	two.Backends = append(two.Backends, two.Backends[0])
	moved := []loadbalancer.FrontendSpec{two, spec}
	moved[1].Backends = nil
	if w.sum([]loadbalancer.FrontendSpec{spec, spec}) == w.sum(moved) {
		t.Error("backends moved between frontends give the same sum")
	}
}
