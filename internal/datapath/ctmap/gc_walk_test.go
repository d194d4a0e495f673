package ctmap

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfmap"
	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
	"github.com/fastpath-net/fastpath/internal/testpriv"
)

// counting wraps a Map and records what GC asks of it: how often the walk
// visits each key, and the most keys it deletes between two visits,
// which the keys it holds bound.
type counting struct {
	bpfmap.Map[Key, Entry]
	visits    map[Key]int
	burst     int
	maxDelete int
	// iterate, when set, walks with one get-next-key call per entry, the
	// kernel path of maps and kernels without batch lookup.
	iterate *ebpf.Map
}

func (c *counting) Range(fn func(Key, Entry) bool) error {
	visit := func(k Key, v Entry) bool {
		c.visits[k]++
		c.burst = 0
		return fn(k, v)
	}
	if c.iterate == nil {
		return c.Map.Range(visit)
	}
	var k Key
	var v Entry
	it := c.iterate.Iterate()
	for it.Next(&k, &v) {
		if !visit(k, v) {
			break
		}
	}
	return it.Err()
}

func (c *counting) Delete(keys []Key) error {
	c.burst += len(keys)
	c.maxDelete = max(c.maxDelete, c.burst)
	return c.Map.Delete(keys)
}

// randomFlows fills m with n flows whose directions expire at random
// around now=100, some closed, some masqueraded, some with a direction
// missing, and returns the verdict the definition of GC gives each key,
// judged on the full map.
func randomFlows(t testing.TB, m bpfmap.Map[Key, Entry], n int) map[Key]bool {
	rng := rand.New(rand.NewPCG(1, 2))
	var keys []Key
	var vals []Entry
	for i := range n {
		k, v := flow(uint16(1000+i), 50+rng.Uint64N(100), 50+rng.Uint64N(100))
		if rng.IntN(4) == 0 {
			masquerade(k, v, uint16(20000+i))
		}
		if rng.IntN(5) == 0 {
			v[0].Flags |= Closing
			v[1].Flags |= Closing
		}
		switch rng.IntN(10) {
		case 0:
			k, v = k[:1], v[:1]
		case 1:
			k, v = k[1:], v[1:]
		}
		keys, vals = append(keys, k...), append(vals, v...)
	}
	if err := m.Update(keys, vals); err != nil {
		t.Fatal(err)
	}
	all := map[Key]Entry{}
	for i := range keys {
		all[keys[i]] = vals[i]
	}
	lookup := func(k Key) (Entry, bool) { e, ok := all[k]; return e, ok }
	dead := map[Key]bool{}
	for k, v := range all {
		dead[k] = v.Expires < 100 && !flowOpen(k, v, lookup, 100)
	}
	return dead
}

// masquerade makes flow k, v (flow's) a masqueraded one, on port.
func masquerade(k []Key, v []Entry, port uint16) {
	masq := lbmap.AddrFrom(netip.MustParseAddr("192.168.0.1"))
	v[0].Flags |= SNAT
	v[0].SnatAddr, v[0].SnatPort = masq, port
	k[1].DAddr, k[1].DPort = masq, port
	v[1].Flags |= SNAT
	v[1].SnatAddr, v[1].SnatPort = k[0].SAddr, k[0].SPort
}

func checkVerdicts(t *testing.T, m bpfmap.Map[Key, Entry], dead map[Key]bool, deleted int) {
	t.Helper()
	want := 0
	for k, d := range dead {
		_, present, err := m.Lookup(k)
		if err != nil {
			t.Fatal(err)
		}
		if present == d {
			t.Errorf("%v: present=%v after GC, dead=%v", k, present, d)
		}
		if d {
			want++
		}
	}
	if deleted != want {
		t.Errorf("GC reported %d deleted, want %d", deleted, want)
	}
}

// Deleting behind the walk must give every entry the verdict it gets on
// the whole map, and hold no more than one chunk of keys.
func TestGCChunkedMatchesWholeMapVerdicts(t *testing.T) {
	fake := bpfmap.NewFake[Key, Entry]("fp_ct", 10000)
	dead := randomFlows(t, fake, 2000)
	c := &counting{Map: fake, visits: map[Key]int{}}
	res, err := gc(c, 100, 7, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkVerdicts(t, fake, dead, res.Deleted)
	checkLive(t, res, len(dead))
	if c.maxDelete > 7 {
		t.Errorf("GC deleted %d keys in one go, chunk is 7", c.maxDelete)
	}
}

// On a real LRU hash map, both kernel walks (batch cursor, get-next-key)
// see each entry once while GC deletes behind them: a get-next-key walk
// whose current key is deleted starts over from the first key.
func TestGCBoundedOnKernelMap(t *testing.T) {
	testpriv.Require(t)
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	for _, iterate := range []bool{false, true} {
		name := map[bool]string{false: "batch", true: "iterate"}[iterate]
		t.Run(name, func(t *testing.T) {
			em, err := ebpf.NewMap(&ebpf.MapSpec{
				Type: ebpf.LRUHash, KeySize: uint32(unsafe.Sizeof(Key{})), ValueSize: uint32(unsafe.Sizeof(Entry{})), MaxEntries: 16384,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer em.Close()
			k := bpfmap.NewKernel[Key, Entry](em, "fp_ct")
			dead := randomFlows(t, k, 5000)
			c := &counting{Map: k, visits: map[Key]int{}}
			if iterate {
				c.iterate = em
			}
			res, err := gc(c, 100, 64, nil)
			if err != nil {
				t.Fatal(err)
			}
			checkVerdicts(t, k, dead, res.Deleted)
			checkLive(t, res, len(dead))
			if c.maxDelete > 64 {
				t.Errorf("GC deleted %d keys in one go, chunk is 64", c.maxDelete)
			}
			again := 0
			for _, v := range c.visits {
				if v > 1 {
					again++
				}
			}
			if again > 0 || len(c.visits) != len(dead) {
				t.Errorf("walk visited %d of %d entries, %d of them more than once", len(c.visits), len(dead), again)
			}
		})
	}
}

// checkLive: GC saw every entry, and reports left those it kept.
func checkLive(t *testing.T, res GCResult, total int) {
	t.Helper()
	if res.Seen != total || res.Deleted == 0 || res.Live != total-res.Deleted {
		t.Errorf("GC of %d entries: saw %d, %d deleted, %d live; want all seen, some deleted and the rest live", total, res.Seen, res.Deleted, res.Live)
	}
}

// A paced walk pauses after every chunk of deletes and ends where its
// pause says so, reporting that it did.
func TestGCPacedPausesBetweenChunksAndStops(t *testing.T) {
	fake := bpfmap.NewFake[Key, Entry]("fp_ct", 10000)
	randomFlows(t, fake, 2000)
	pauses := 0
	res, err := gc(fake, 100, 7, func(time.Duration) bool {
		pauses++
		return pauses < 3
	})
	if !errors.Is(err, ErrStopped) || pauses != 3 || res.Deleted != 3*7 {
		t.Errorf("stopped at the third pause: %v after %d pauses, %d deleted; want ErrStopped, 3, 21", err, pauses, res.Deleted)
	}
}
