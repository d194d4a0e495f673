package ctl

import (
	"runtime"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/fastpath-net/fastpath/internal/testpriv"
)

// TestCountEntries counts maps of every kind the datapath pins, batched
// or not, including hash buckets larger than the first buffer (many keys
// in a map of 1 to 5 entries' capacity is not possible, so a small map
// and a large one).
func TestCountEntries(t *testing.T) {
	testpriv.Require(t)
	for _, c := range []struct {
		typ      ebpf.MapType
		max, put int
	}{
		{ebpf.Hash, 3, 3},
		{ebpf.Hash, 20000, 12345},
		{ebpf.LRUHash, 20000, 9999},
		{ebpf.PerCPUHash, 100, 42},
		{ebpf.Hash, 100, 0},
	} {
		m, err := ebpf.NewMap(&ebpf.MapSpec{Type: c.typ, KeySize: 12, ValueSize: 20, MaxEntries: uint32(c.max)})
		if err != nil {
			t.Fatal(err)
		}
		for i := range c.put {
			var k [12]byte
			k[0], k[1], k[2] = byte(i), byte(i>>8), byte(i>>16)
			var v any = [20]byte{}
			if c.typ == ebpf.PerCPUHash {
				v = make([][20]byte, ebpf.MustPossibleCPU())
			}
			if err := m.Update(k, v, ebpf.UpdateAny); err != nil {
				t.Fatal(err)
			}
		}
		n, err := countEntries(m)
		m.Close()
		if err != nil || n != c.put {
			t.Errorf("%v max %d: counted %d (%v), want %d", c.typ, c.max, n, err, c.put)
		}
	}
}

// Counting reuses its buffers: /metrics counts every pinned map at each
// scrape, and two fresh 4,096-entry buffers a map were most of the agent's
// garbage between scrapes. Bytes, not allocations: the kernel call's own
// small ones stay.
func TestCountReusesBuffers(t *testing.T) {
	testpriv.Require(t)
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 40, ValueSize: 88, MaxEntries: 20000})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for i := range 5000 {
		var k [40]byte
		k[0], k[1] = byte(i), byte(i>>8)
		if err := m.Update(k, [88]byte{}, ebpf.UpdateAny); err != nil {
			t.Fatal(err)
		}
	}
	count := func() {
		if n, err := countEntries(m); err != nil || n != 5000 {
			t.Fatalf("counted %d (%v), want 5000", n, err)
		}
	}
	count() // the first count makes the buffers
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	const counts = 10
	for range counts {
		count()
	}
	runtime.ReadMemStats(&after)
	per := (after.TotalAlloc - before.TotalAlloc) / counts
	t.Logf("%d bytes allocated per count", per)
	// Fresh buffers: 4,096 * (40 + 88) = 512 KiB a count.
	if per > 16<<10 {
		t.Errorf("a count allocated %d bytes, want at most 16 KiB: are the buffers reused?", per)
	}
}
