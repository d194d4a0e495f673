package loadbalancer_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfmap"
	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
	lb "github.com/fastpath-net/fastpath/internal/loadbalancer"
)

// twinService is svcN(i, 1) with an INTERNAL twin of its frontend holding
// two backends, as externalTrafficPolicy: Local makes it.
func twinService(i int) lb.Service {
	svc := svcN(i, 1)
	in := svcN(i, 2).Frontends[0]
	in.Scope = lb.ScopeInternal
	svc.Frontends = append(svc.Frontends, in)
	return svc
}

// stepwise applies every batch one key at a time and checks after each
// that no EXTERNAL entry's twin flag points to a missing INTERNAL entry:
// the datapath would then give internal traffic the EXTERNAL backends.
type stepwise struct {
	bpfmap.Map[lbmap.ServiceKey, lbmap.ServiceValue]
	t *testing.T
}

func (s *stepwise) Update(keys []lbmap.ServiceKey, vals []lbmap.ServiceValue) error {
	for i := range keys {
		if err := s.Map.Update(keys[i:i+1], vals[i:i+1]); err != nil {
			return err
		}
		s.check()
	}
	return nil
}

func (s *stepwise) Delete(keys []lbmap.ServiceKey) error {
	for i := range keys {
		if err := s.Map.Delete(keys[i : i+1]); err != nil {
			return err
		}
		s.check()
	}
	return nil
}

// check allows a flag without its INTERNAL entry only while the EXTERNAL
// entry is what the source wants anyway: never, in these tests, as every
// removal clears the flag first.
func (s *stepwise) check() {
	s.t.Helper()
	err := s.Map.Range(func(k lbmap.ServiceKey, v lbmap.ServiceValue) bool {
		if k.Slot != 0 || k.Scope != lbmap.ScopeExternal || v.Flags&lbmap.ServiceInternalTwin == 0 {
			return true
		}
		in := k
		in.Scope = lbmap.ScopeInternal
		if _, ok, _ := s.Map.Lookup(in); !ok {
			s.t.Errorf("%v flags an internal twin the map does not hold", k)
		}
		return true
	})
	if err != nil {
		s.t.Fatal(err)
	}
}

// The EXTERNAL entry carries the twin flag exactly while the table holds
// the INTERNAL twin; adding or removing the twin rewrites one EXTERNAL
// slot 0 besides the INTERNAL entries themselves, and the INTERNAL entry
// is in the map whenever the flag is.
func TestTwinFlagFollowsTheInternalFrontend(t *testing.T) {
	f := newFakes(100)
	maps := f.maps
	maps.Services = &stepwise{Map: f.svc, t: t}
	tab := lb.NewTable()
	r := lb.NewReconciler(maps, lb.ReconcilerOptions{})
	mustUpsert(t, tab, svcN(2, 1)) // an unrelated service, untouched below
	mustUpsert(t, tab, twinService(1))
	mustSync(t, r, tab)
	want := `services: 10.96.0.1:80/TCP slot 0 -> count=1 revnat=1 flags=internal-twin affinity=0
services: 10.96.0.1:80/TCP slot 1 -> backend=1
services: 10.96.0.1:80/TCP internal slot 0 -> count=2 revnat=2 flags=- affinity=0
services: 10.96.0.1:80/TCP internal slot 1 -> backend=1
services: 10.96.0.1:80/TCP internal slot 2 -> backend=2
services: 10.96.0.2:80/TCP slot 0 -> count=1 revnat=3 flags=- affinity=0
services: 10.96.0.2:80/TCP slot 1 -> backend=3
backends: 1 -> 10.1.0.1:8080/TCP active
backends: 2 -> 10.2.0.1:8080/TCP active
backends: 3 -> 10.1.0.2:8080/TCP active
revnat: 1 -> 10.96.0.1:80
revnat: 2 -> 10.96.0.1:80
revnat: 3 -> 10.96.0.2:80
`
	if got := f.dump(t); got != want {
		t.Fatalf("with the twin: got\n%s\nwant\n%s", got, want)
	}
	f.ops()

	mustUpsert(t, tab, svcN(1, 1))
	mustSync(t, r, tab)
	if got, want := f.ops(), "services=1/3 backends=0/1 revnat=0/1"; got != want {
		t.Errorf("removing the twin: %s, want %s", got, want)
	}
	if got := f.dump(t); !strings.Contains(got, "10.96.0.1:80/TCP slot 0 -> count=1 revnat=1 flags=- affinity=0") ||
		strings.Contains(got, "internal") {
		t.Errorf("without the twin: flag or INTERNAL entry left:\n%s", got)
	}

	mustUpsert(t, tab, twinService(1))
	mustSync(t, r, tab)
	if got, want := f.ops(), "services=4/0 backends=1/0 revnat=1/0"; got != want {
		t.Errorf("adding the twin back: %s, want %s", got, want)
	}
	if got := f.dump(t); got != want {
		t.Errorf("twin back: got\n%s\nwant\n%s", got, want)
	}

	tab.Delete(twinService(1).Name)
	mustSync(t, r, tab)
	if got, want := f.ops(), "services=0/5 backends=0/2 revnat=0/2"; got != want {
		t.Errorf("deleting the service: %s, want %s", got, want)
	}
}

// The table refuses an INTERNAL frontend without its EXTERNAL twin, naming
// it: the datapath would never look it up.
func TestInternalWithoutTwinIsInvalid(t *testing.T) {
	svc := twinService(1)
	svc.Frontends = svc.Frontends[1:]
	err := lb.NewTable().Upsert(svc)
	if !errors.Is(err, lb.ErrInvalid) || !strings.Contains(err.Error(), "frontends[0] (10.96.0.1:80/TCP internal): internal frontend without the external frontend 10.96.0.1:80/TCP") {
		t.Errorf("error %v: want ErrInvalid naming the lone internal frontend", err)
	}
}

// Twins of two services: one owns the EXTERNAL frontend, the other the
// INTERNAL one (it asked for both and lost the EXTERNAL one). The flag
// follows the table's INTERNAL key, whoever owns it, as the datapath's
// lookup did before the flag existed.
func TestTwinFlagAcrossOwners(t *testing.T) {
	f := newFakes(100)
	tab := lb.NewTable()
	r := lb.NewReconciler(f.maps, lb.ReconcilerOptions{})
	mustUpsert(t, tab, svcN(1, 1))
	other := twinService(1)
	other.Name.Name = "other"
	if err := tab.Upsert(other); !errors.Is(err, lb.ErrConflict) {
		t.Fatalf("error %v, want a conflict on the EXTERNAL frontend", err)
	}
	mustSync(t, r, tab)
	want := `services: 10.96.0.1:80/TCP slot 0 -> count=1 revnat=1 flags=internal-twin affinity=0
services: 10.96.0.1:80/TCP slot 1 -> backend=1
services: 10.96.0.1:80/TCP internal slot 0 -> count=2 revnat=2 flags=- affinity=0
services: 10.96.0.1:80/TCP internal slot 1 -> backend=1
services: 10.96.0.1:80/TCP internal slot 2 -> backend=2
backends: 1 -> 10.1.0.1:8080/TCP active
backends: 2 -> 10.2.0.1:8080/TCP active
revnat: 1 -> 10.96.0.1:80
revnat: 2 -> 10.96.0.1:80
`
	if got := f.dump(t); got != want {
		t.Errorf("scopes are separate entries, the EXTERNAL one flagged: got\n%s\nwant\n%s", got, want)
	}
	tab.Delete(other.Name)
	mustSync(t, r, tab)
	if got := f.dump(t); strings.Contains(got, "internal") {
		t.Errorf("after deleting the INTERNAL twin's owner the flag or entry stays:\n%s", got)
	}
}
