package ctl

import (
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
