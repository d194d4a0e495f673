package ctmap

import (
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfmap"
	"github.com/fastpath-net/fastpath/internal/testpriv"
)

// rewriting stands in for the datapath during a GC walk: once the walk
// has seen a key of renew, a new flow writes that key anew, as a client
// that reuses its port does while the closed flow's entries await GC.
type rewriting struct {
	bpfmap.Map[Key, Entry]
	t     *testing.T
	renew map[Key]Entry
}

func (r *rewriting) Range(fn func(Key, Entry) bool) error {
	return r.Map.Range(func(k Key, v Entry) bool {
		more := fn(k, v)
		if e, ok := r.renew[k]; ok {
			if err := r.Map.Update([]Key{k}, []Entry{e}); err != nil {
				r.t.Errorf("rewrite %v: %v", k, err)
			}
		}
		return more
	})
}

// A closed flow's entries that a new flow writes anew between GC's verdict
// and its delete belong to the new flow: GC leaves them, and still deletes
// the dead flows nobody touched.
func TestGCKeepsEntriesWrittenAnewDuringTheWalk(t *testing.T) {
	t.Run("fake", func(t *testing.T) {
		checkGCRace(t, bpfmap.NewFake[Key, Entry]("fp_ct", 16))
	})
	t.Run("kernel", func(t *testing.T) {
		testpriv.Require(t)
		if err := rlimit.RemoveMemlock(); err != nil {
			t.Fatal(err)
		}
		em, err := ebpf.NewMap(&ebpf.MapSpec{
			Type: ebpf.LRUHash, KeySize: uint32(unsafe.Sizeof(Key{})), ValueSize: uint32(unsafe.Sizeof(Entry{})), MaxEntries: 1024,
		})
		if err != nil {
			t.Fatal(err)
		}
		defer em.Close()
		checkGCRace(t, bpfmap.NewKernel[Key, Entry](em, "fp_ct"))
	})
}

func checkGCRace(t *testing.T, m bpfmap.Map[Key, Entry]) {
	reused, reusedV := flow(3, 50, 60)
	dead, deadV := flow(4, 50, 60)
	for _, v := range [][]Entry{reusedV, deadV} {
		v[0].Flags |= Closing
		v[1].Flags |= Closing
	}
	if err := m.Update(append(reused, dead...), append(reusedV, deadV...)); err != nil {
		t.Fatal(err)
	}
	// The new flow on the same tuple: same backend, open, far from expiry.
	_, newV := flow(3, 500, 500)
	r := &rewriting{Map: m, t: t, renew: map[Key]Entry{reused[0]: newV[0], reused[1]: newV[1]}}
	res, err := Collect(r, 100)
	if err != nil {
		t.Fatal(err)
	}
	// The walk judges the reused flow's first key dead; when it reaches the
	// second, the first is the new flow's, whose twin it is: alive.
	if res.Deleted != 2 || res.Rewritten != 1 {
		t.Errorf("GC deleted %d and found %d written anew; want 2 (the untouched dead flow) and 1", res.Deleted, res.Rewritten)
	}
	for i, k := range reused {
		if v, ok, _ := m.Lookup(k); !ok || v != newV[i] {
			t.Errorf("%v after GC: %+v (present %v); want the new flow's %+v", k, v, ok, newV[i])
		}
	}
	for _, k := range dead {
		if _, ok, _ := m.Lookup(k); ok {
			t.Errorf("%v of the untouched dead flow survived GC", k)
		}
	}
}
