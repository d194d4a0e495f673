package lbmap

import (
	"reflect"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfobj"
	"github.com/fastpath-net/fastpath/internal/datapath/layoutcheck"
)

// TestLayoutMatchesObjects checks every Go twin against the BTF of both
// compiled objects, so a change to fastpath.h that forgets the Go side (or a
// stale object) fails here. Reading an object's spec needs no privileges.
func TestLayoutMatchesObjects(t *testing.T) {
	twins := map[string][2]reflect.Type{
		"fp_services":      {reflect.TypeFor[ServiceKey](), reflect.TypeFor[ServiceValue]()},
		"fp_backends":      {nil, reflect.TypeFor[Backend]()},
		"fp_rev_nat":       {nil, reflect.TypeFor[RevNat]()},
		"fp_affinity":      {reflect.TypeFor[AffinityKey](), reflect.TypeFor[AffinityValue]()},
		"fp_config":        {nil, reflect.TypeFor[Config]()},
		"fp_source_ranges": {reflect.TypeFor[SourceRangeKey](), reflect.TypeFor[uint8]()},
	}
	for obj, load := range map[string]func() (*ebpf.CollectionSpec, error){
		"tc_lb": bpfobj.LoadTclb, "sock_lb": bpfobj.LoadSocklb,
	} {
		spec, err := load()
		if err != nil {
			t.Fatal(err)
		}
		for name, kv := range twins {
			m, ok := spec.Maps[name]
			if !ok {
				t.Errorf("%s: no map %s", obj, name)
				continue
			}
			if kv[0] != nil {
				layoutcheck.Struct(t, obj, m.Key, kv[0])
			}
			if kv[1].Kind() == reflect.Struct {
				layoutcheck.Struct(t, obj, m.Value, kv[1])
			}
		}
	}
}
