package lbipam_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/fastpath-net/fastpath/internal/lbipam"
)

// testRestart: a new controller adopts every address from the statuses
// and writes nothing for them; a duplicate address (written while no
// controller ran) stays with the older Service and the younger moves;
// a new Service gets an address nobody holds.
func testRestart(t *testing.T, a *api) {
	ns := a.namespace(t, "fp-lbipam-restart")
	a.nsPool(t, "restart", ns, "[{cidr: 10.16.0.0/28}]")
	stop := a.run(t)
	names := make([]string, 10)
	for i := range names {
		names[i] = fmt.Sprint("s", i)
		if i == len(names)-1 {
			time.Sleep(1100 * time.Millisecond) // creationTimestamp has seconds: s9 is clearly younger than s0
		}
		a.svc(t, ns, names[i], []int32{80})
	}
	before := a.allocated(t, ns, names)
	stop()

	// While no controller runs: the youngest Service is given the
	// oldest one's address (as a stale writer could), and a new one comes.
	young := a.get(t, ns, "s9")
	young.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: before["s0"]}}
	if _, err := a.cs.CoreV1().Services(ns).UpdateStatus(t.Context(), young, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	rv := map[string]string{}
	for _, n := range names[:9] {
		rv[n] = a.get(t, ns, n).ResourceVersion
	}
	a.svc(t, ns, "new", []int32{80})

	a.run(t)
	// s9 still shows s0's address with the old condition until the new
	// controller moved it; wait for that before checking for duplicates.
	a.eventuallyFunc(t, func() bool {
		s9 := state(a.get(t, ns, "s9"))
		return s9 != before["s0"] && !strings.HasPrefix(s9, "-") && !strings.HasPrefix(state(a.get(t, ns, "new")), "-")
	}, func() string { return "s9 not moved off s0's address, or new not allocated" })
	after := a.allocated(t, ns, append(slices.Clone(names), "new"))
	for _, n := range names[:9] {
		if after[n] != before[n] {
			t.Errorf("%s moved from %s to %s across the restart", n, before[n], after[n])
		}
		if got := a.get(t, ns, n).ResourceVersion; got != rv[n] {
			t.Errorf("%s was written by the restarted controller (resourceVersion %s -> %s)", n, rv[n], got)
		}
	}
}

// allocated waits until every named Service has an address and returns
// them, failing if two hold the same one.
func (a *api) allocated(t *testing.T, ns string, names []string) map[string]string {
	t.Helper()
	got := map[string]string{}
	a.eventuallyFunc(t, func() bool {
		for _, n := range names {
			got[n] = state(a.get(t, ns, n))
			if strings.HasPrefix(got[n], "-") || strings.Contains(got[n], " ") {
				return false
			}
		}
		return true
	}, func() string { return "not all allocated: " + fmtMap(got) })
	holder := map[string]string{}
	for n, ip := range got {
		if o, dup := holder[ip]; dup {
			t.Fatalf("%s and %s both hold %s", o, n, ip)
		}
		holder[ip] = n
	}
	return got
}

// testLeaderElection: two controllers race for one Lease while Services
// are created concurrently; the leader is stopped half way and the
// standby takes over. Then a third instance starts and the new leader is
// cut off from the apiserver (no renewal, no release): once the Lease
// expires the third takes over. Every Service ends with its own address:
// two allocators working at once would give the same lowest free address
// to different Services.
func testLeaderElection(t *testing.T, a *api) {
	ns := a.namespace(t, "fp-lbipam-le")
	a.nsPool(t, "le", ns, "[{cidr: 10.17.0.0/26}]")
	e := lbipam.Election{Namespace: "kube-system", Name: "fp-lbipam-test", LeaseDuration: 4 * time.Second, RenewDeadline: 3 * time.Second, RetryPeriod: 200 * time.Millisecond}
	instances := map[string]*instance{}
	for _, id := range []string{"one", "two"} {
		instances[id] = a.startInstance(t, e, id)
	}
	create := func(from, to int) []string {
		var names []string
		var cw sync.WaitGroup
		for i := from; i < to; i++ {
			names = append(names, fmt.Sprint("le", i))
			cw.Add(1)
			go func() {
				defer cw.Done()
				a.svc(t, ns, fmt.Sprint("le", i), []int32{80})
			}()
		}
		cw.Wait()
		return names
	}
	names := create(0, 20)
	leader := a.holder(t, e, "")
	a.allocated(t, ns, names)
	instances[leader].cancel()
	names = append(names, create(20, 40)...)
	standby := a.holder(t, e, leader)
	a.allocated(t, ns, names)

	instances["three"] = a.startInstance(t, e, "three")
	instances[standby].cut.Store(true)
	names = append(names, create(40, 50)...)
	third := a.holder(t, e, standby)
	got := a.allocated(t, ns, names)
	if n := len(slices.Compact(sortedValues(got))); n != 50 {
		t.Fatalf("%d addresses for 50 Services", n)
	}
	t.Logf("leader %s stopped, %s took over, was cut off, %s took over", leader, standby, third)
}

// instance is one leader-elected controller with its own connection.
type instance struct {
	cancel context.CancelFunc
	cut    *atomic.Bool // true: every request fails, as in a partition
}

func (a *api) startInstance(t *testing.T, e lbipam.Election, id string) *instance {
	t.Helper()
	in := &instance{cut: new(atomic.Bool)}
	cfg := rest.CopyConfig(a.env.Config)
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			if in.cut.Load() {
				return nil, errors.New("cut off by the test")
			}
			return rt.RoundTrip(r)
		})
	}
	cs := kubernetes.NewForConfigOrDie(cfg)
	dyn := dynamic.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	in.cancel = func() { cancel(); <-done }
	e.Identity = id
	go func() {
		defer close(done)
		err := lbipam.RunLeaderElected(ctx, cs, e, testLog(t), func(ctx context.Context) {
			if err := lbipam.NewController(cs, dyn, testLog(t)).Run(ctx); err != nil {
				t.Errorf("%s: %v", id, err)
			}
		})
		if err != nil {
			t.Errorf("%s: %v", id, err)
		}
	}()
	t.Cleanup(in.cancel)
	return in
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// holder waits until the Lease is held by someone other than not and
// returns who.
func (a *api) holder(t *testing.T, e lbipam.Election, not string) string {
	t.Helper()
	var id string
	a.eventuallyFunc(t, func() bool {
		l, err := a.cs.CoordinationV1().Leases(e.Namespace).Get(t.Context(), e.Name, metav1.GetOptions{})
		if err != nil || l.Spec.HolderIdentity == nil {
			return false
		}
		id = *l.Spec.HolderIdentity
		return id != "" && id != not
	}, func() string { return fmt.Sprintf("Lease held by %q, want someone but %q", id, not) })
	return id
}

func sortedValues(m map[string]string) []string {
	v := slices.Collect(maps.Values(m))
	sort.Strings(v)
	return v
}

// eventuallyFunc polls ok for 30s; what describes the failure.
func (a *api) eventuallyFunc(t *testing.T, ok func() bool, what func() string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if ok() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal(what())
}

func fmtMap(m map[string]string) string {
	keys := slices.Sorted(maps.Keys(m))
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s ", k, m[k])
	}
	return b.String()
}

func containsValue(m map[string]string, v string) bool {
	return slices.Contains(slices.Collect(maps.Values(m)), v)
}

func keyOf(m map[string]string, v string) string {
	for k, x := range m {
		if x == v {
			return k
		}
	}
	return ""
}
