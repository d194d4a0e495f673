package lbmap

import (
	"reflect"
	"strings"
	"testing"
	"unicode"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfobj"
)

// TestLayoutMatchesObjects checks every Go twin against the BTF of both
// compiled objects, so a change to fastpath.h that forgets the Go side (or a
// stale object) fails here. Reading an object's spec needs no privileges.
func TestLayoutMatchesObjects(t *testing.T) {
	twins := map[string][2]reflect.Type{
		"fp_services": {reflect.TypeFor[ServiceKey](), reflect.TypeFor[ServiceValue]()},
		"fp_backends": {nil, reflect.TypeFor[Backend]()},
		"fp_rev_nat":  {nil, reflect.TypeFor[RevNat]()},
		"fp_affinity": {reflect.TypeFor[AffinityKey](), reflect.TypeFor[AffinityValue]()},
		"fp_config":   {nil, reflect.TypeFor[Config]()},
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
				checkLayout(t, obj, m.Key, kv[0])
			}
			checkLayout(t, obj, m.Value, kv[1])
		}
	}
}

// checkLayout compares size and the offset and size of every named field.
// Go's blank padding fields have no C name and are covered by the size.
func checkLayout(t *testing.T, obj string, ct btf.Type, gt reflect.Type) {
	t.Helper()
	st, ok := btf.UnderlyingType(ct).(*btf.Struct)
	if !ok {
		t.Fatalf("%s %s: BTF type %v is not a struct", obj, gt.Name(), ct)
	}
	if int(st.Size) != int(gt.Size()) {
		t.Errorf("%s %s: Go size %d, C struct %s size %d", obj, gt.Name(), gt.Size(), st.Name, st.Size)
	}
	members := map[string]btf.Member{}
	for _, m := range st.Members {
		members[m.Name] = m
	}
	for i := range gt.NumField() {
		f := gt.Field(i)
		if f.Name == "_" {
			continue
		}
		m, ok := members[snake(f.Name)]
		if !ok {
			t.Errorf("%s %s.%s: no C member %q in %s", obj, gt.Name(), f.Name, snake(f.Name), st.Name)
			continue
		}
		if off := int(m.Offset.Bytes()); off != int(f.Offset) {
			t.Errorf("%s %s.%s: Go offset %d, C offset %d", obj, gt.Name(), f.Name, f.Offset, off)
		}
		size, err := btf.Sizeof(m.Type)
		if err != nil {
			t.Fatalf("%s %s.%s: %v", obj, gt.Name(), f.Name, err)
		}
		if size != int(f.Type.Size()) {
			t.Errorf("%s %s.%s: Go size %d, C size %d", obj, gt.Name(), f.Name, f.Type.Size(), size)
		}
	}
}

// snake turns a Go field name into its C member name: RevNatID -> rev_nat_id.
func snake(name string) string {
	var b strings.Builder
	prev := rune(0)
	for _, r := range name {
		if unicode.IsUpper(r) && unicode.IsLower(prev) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToLower(r))
		prev = r
	}
	return b.String()
}
