package policymap_test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfmap"
	"github.com/fastpath-net/fastpath/internal/datapath/policymap"
	"github.com/fastpath-net/fastpath/internal/identity"
	"github.com/fastpath-net/fastpath/internal/policy"
	"github.com/fastpath-net/fastpath/internal/policy/policytest"
)

// logged wraps a fake map and appends every write and delete to a shared
// log, so tests can check the order of writes across maps.
type logged[K comparable, V any] struct {
	*bpfmap.Fake[K, V]
	log *[]string
}

func (l logged[K, V]) Update(keys []K, vals []V) error {
	for _, k := range keys {
		*l.log = append(*l.log, fmt.Sprintf("write %s %v", l.Name(), k))
	}
	return l.Fake.Update(keys, vals)
}

func (l logged[K, V]) Delete(keys []K) error {
	for _, k := range keys {
		*l.log = append(*l.log, fmt.Sprintf("delete %s %v", l.Name(), k))
	}
	return l.Fake.Delete(keys)
}

type fakes struct {
	ipcache *bpfmap.Fake[policymap.IPCacheKey, policymap.IPCacheValue]
	eps     *bpfmap.Fake[uint32, policymap.Endpoint]
	pol     *bpfmap.Fake[policymap.PolicyKey, policymap.PolicyValue]
	log     []string
}

func newFakes() *fakes {
	return &fakes{
		ipcache: bpfmap.NewFake[policymap.IPCacheKey, policymap.IPCacheValue](policymap.IPCacheMap, 1000),
		eps:     bpfmap.NewFake[uint32, policymap.Endpoint](policymap.EndpointsMap, 100),
		pol:     bpfmap.NewFake[policymap.PolicyKey, policymap.PolicyValue](policymap.PolicyMap, 10000),
	}
}

func (f *fakes) maps() policymap.Maps {
	return policymap.Maps{
		IPCache:   logged[policymap.IPCacheKey, policymap.IPCacheValue]{f.ipcache, &f.log},
		Endpoints: logged[uint32, policymap.Endpoint]{f.eps, &f.log},
		Policy:    logged[policymap.PolicyKey, policymap.PolicyValue]{f.pol, &f.log},
	}
}

func (f *fakes) ops() (w, d int) {
	for _, m := range []interface{ Ops() (int, int) }{f.ipcache, f.eps, f.pol} {
		a, b := m.Ops()
		w, d = w+a, d+b
	}
	return w, d
}

// attachAll gives every pod of the world an attachment: ifindex 100+i, id
// i+1, address 10.9.0.i+1.
func attachAll(w *policytest.World) func(policy.PodName) (policymap.Attachment, bool) {
	ids := map[policy.PodName]policymap.Attachment{}
	for i, n := range w.PodNames() {
		pn, _ := policy.ParsePodName(n)
		ids[pn] = policymap.Attachment{Ifindex: uint32(100 + i), ID: uint16(i + 1), Addr4: netip.AddrFrom4([4]byte{10, 9, 0, byte(i + 1)})}
	}
	return func(p policy.PodName) (policymap.Attachment, bool) {
		a, ok := ids[p]
		return a, ok
	}
}

const reconcilePolicies = `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: "y", name: from-x-a}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: "x"}}
      podSelector: {matchLabels: {pod: a}}
    ports: [{port: 80, endPort: 81}]
`

// TestReconcilerIncremental: a full first sync, then a label change that
// adds one identity to one selector writes that identity's ipcache entry
// and y/a's new keys (and the relabelled pod's record), nothing else; a
// restarted reconciler that restores writes nothing for the same state.
func TestReconcilerIncremental(t *testing.T) {
	eng, w := baseEngine(t, reconcilePolicies)
	f := newFakes()
	r := policymap.NewReconciler(f.maps(), attachAll(w))
	if err := r.Apply(eng.Changes()); err != nil {
		t.Fatal(err)
	}
	if n := len(mustAll(t, f.eps)); n != 9 {
		t.Errorf("%d endpoint records, want 9", n)
	}
	// Each record carries its pod's address: the only source tc_lb lets
	// the pod send from.
	if rec, ok, _ := f.eps.Lookup(101); !ok || rec.ID != 2 || rec.Addr4 != [4]byte{10, 9, 0, 2} {
		t.Errorf("record of ifindex 101: %+v, %v; want id 2, address 10.9.0.2", rec, ok)
	}
	// y/a: ingress enforced, x/a's identity on TCP 80-81 (one block).
	if got := policyKeysOf(t, f, 4); len(got) != 1 || got[0].Prefixlen != 79 {
		t.Errorf("y/a keys %+v, want one 79-bit block", got)
	}
	f.ops()
	f.log = nil

	p := w.Pods["x/b"].DeepCopy()
	p.Labels = map[string]string{"pod": "a", "new": "1"}
	eng.UpsertPod(p)
	if err := r.Apply(eng.Changes()); err != nil {
		t.Fatal(err)
	}
	writes, deletes := f.ops()
	// ipcache: x/b's address; policy: y/a gains one key; records: x/b's
	// identity changed. No deletes (x/b's old identity was in no entry).
	if writes != 3 || deletes != 0 {
		t.Errorf("label change: %d writes, %d deletes, want 3 and 0:\n%s", writes, deletes, strings.Join(f.log, "\n"))
	}
	if !strings.HasPrefix(f.log[0], "write fp_ipcache") {
		t.Errorf("first write %q, want the ipcache entry of the new identity", f.log[0])
	}

	r2 := policymap.NewReconciler(f.maps(), attachAll(w))
	if err := r2.Restore(); err != nil {
		t.Fatal(err)
	}
	eng2, _ := baseEngine(t, reconcilePolicies)
	eng2.UpsertPod(p)
	cs := eng2.Changes()
	if err := r2.SyncIPCache(eng2.IPCache()); err != nil {
		t.Fatal(err)
	}
	cs.IPCache = policy.IPCacheDelta{}
	if err := r2.Apply(cs); err != nil {
		t.Fatal(err)
	}
	if writes, deletes := f.ops(); writes != 0 || deletes != 0 {
		t.Errorf("restart: %d writes, %d deletes, want none", writes, deletes)
	}
}

// TestReconcilerOrder: enforcement starts after its allows are written and
// stops before they are deleted.
func TestReconcilerOrder(t *testing.T) {
	eng, w := baseEngine(t, "")
	f := newFakes()
	r := policymap.NewReconciler(f.maps(), attachAll(w))
	if err := r.Apply(eng.Changes()); err != nil {
		t.Fatal(err)
	}
	f.log = nil
	must(t, w.Apply(eng, []byte(reconcilePolicies)))
	if err := r.Apply(eng.Changes()); err != nil {
		t.Fatal(err)
	}
	if want := []string{"write fp_policy", "write fp_endpoints"}; !prefixes(f.log, want) {
		t.Errorf("enforcing: %v, want %v", f.log, want)
	}
	f.log = nil
	must(t, w.Delete(eng, []byte("networkpolicy y/from-x-a")))
	if err := r.Apply(eng.Changes()); err != nil {
		t.Fatal(err)
	}
	if want := []string{"write fp_endpoints", "delete fp_policy"}; !prefixes(f.log, want) {
		t.Errorf("stopping: %v, want %v", f.log, want)
	}
	if n := len(mustAll(t, f.pol)); n != 0 {
		t.Errorf("%d policy keys left", n)
	}
	// A deleted pod: record first, then keys.
	must(t, w.Apply(eng, []byte(reconcilePolicies)))
	if err := r.Apply(eng.Changes()); err != nil {
		t.Fatal(err)
	}
	f.log = nil
	eng.DeletePod(policy.PodName{Namespace: "y", Name: "a"})
	if err := r.Apply(eng.Changes()); err != nil {
		t.Fatal(err)
	}
	if want := []string{"delete fp_endpoints", "delete fp_policy", "delete fp_ipcache"}; !prefixes(f.log, want) {
		t.Errorf("pod deleted: %v, want %v", f.log, want)
	}
	// Prune removes endpoints a restarted agent no longer has.
	if err := r.Prune(func(id uint16) bool { return id != 1 }); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := f.eps.Lookup(100); ok {
		t.Error("pruned endpoint's record left")
	}
}

func prefixes(log, want []string) bool {
	if len(log) != len(want) {
		return false
	}
	for i := range want {
		if !strings.HasPrefix(log[i], want[i]) {
			return false
		}
	}
	return true
}

func baseEngine(t *testing.T, extra string) (*policy.Engine, *policytest.World) {
	t.Helper()
	eng, w, err := policytest.NewBase(identity.NewMemory(identity.MinCluster).Identity, extra)
	must(t, err)
	return eng, w
}

func mustAll[K comparable, V any](t *testing.T, m *bpfmap.Fake[K, V]) map[K]V {
	t.Helper()
	all, err := m.All()
	if err != nil {
		t.Fatal(err)
	}
	return all
}

func policyKeysOf(t *testing.T, f *fakes, id uint16) []policymap.PolicyKey {
	var out []policymap.PolicyKey
	for k := range mustAll(t, f.pol) {
		if k.Endpoint == id {
			out = append(out, k)
		}
	}
	return out
}
