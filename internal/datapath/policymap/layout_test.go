package policymap

import (
	"reflect"
	"testing"

	"github.com/cilium/ebpf/btf"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfobj"
	"github.com/fastpath-net/fastpath/internal/datapath/layoutcheck"
)

// TestLayoutMatchesObject checks every twin against the BTF of the
// compiled tc_policy object.
func TestLayoutMatchesObject(t *testing.T) {
	spec, err := bpfobj.LoadTcpolicy()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		m          string
		key, value reflect.Type
	}{
		{IPCacheMap, reflect.TypeFor[IPCacheKey](), reflect.TypeFor[IPCacheValue]()},
		{EndpointsMap, reflect.TypeFor[uint32](), reflect.TypeFor[Endpoint]()},
		{PolicyMap, reflect.TypeFor[PolicyKey](), reflect.TypeFor[PolicyValue]()},
		{PolicyCTMap, reflect.TypeFor[CTKey](), reflect.TypeFor[CTValue]()},
		{ConfigMap, reflect.TypeFor[uint32](), reflect.TypeFor[PolicyConfig]()},
	} {
		m, ok := spec.Maps[c.m]
		if !ok {
			t.Fatalf("object has no map %s", c.m)
		}
		if c.key.Kind() == reflect.Struct {
			layoutcheck.Struct(t, c.m, m.Key, c.key)
		}
		layoutcheck.Struct(t, c.m, m.Value, c.value)
	}
	var v *btf.Struct
	if err := spec.Types.TypeByName("fp_verdict", &v); err != nil {
		t.Fatal(err)
	}
	layoutcheck.Struct(t, "", v, reflect.TypeFor[Verdict]())
}
