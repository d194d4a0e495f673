package ctmap

import (
	"reflect"
	"strings"
	"testing"
	"unicode"

	"github.com/cilium/ebpf/btf"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfobj"
)

// TestLayoutMatchesObject checks Key and Entry against the BTF of the
// compiled tc_lb object, so a change to fastpath.h that forgets the Go side
// (or a stale object) fails here. Reading a spec needs no privileges.
func TestLayoutMatchesObject(t *testing.T) {
	spec, err := bpfobj.LoadTclb()
	if err != nil {
		t.Fatal(err)
	}
	m, ok := spec.Maps["fp_ct"]
	if !ok {
		t.Fatal("object has no map fp_ct")
	}
	checkLayout(t, m.Key, reflect.TypeFor[Key]())
	checkLayout(t, m.Value, reflect.TypeFor[Entry]())
}

// checkLayout compares size and the offset and size of every named field.
// Go's blank padding fields have no C name and are covered by the size.
func checkLayout(t *testing.T, ct btf.Type, gt reflect.Type) {
	t.Helper()
	st, ok := btf.UnderlyingType(ct).(*btf.Struct)
	if !ok {
		t.Fatalf("%s: BTF type %v is not a struct", gt.Name(), ct)
	}
	if int(st.Size) != int(gt.Size()) {
		t.Errorf("%s: Go size %d, C struct %s size %d", gt.Name(), gt.Size(), st.Name, st.Size)
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
			t.Errorf("%s.%s: no C member %q in %s", gt.Name(), f.Name, snake(f.Name), st.Name)
			continue
		}
		if off := int(m.Offset.Bytes()); off != int(f.Offset) {
			t.Errorf("%s.%s: Go offset %d, C offset %d", gt.Name(), f.Name, f.Offset, off)
		}
		size, err := btf.Sizeof(m.Type)
		if err != nil {
			t.Fatalf("%s.%s: %v", gt.Name(), f.Name, err)
		}
		if size != int(f.Type.Size()) {
			t.Errorf("%s.%s: Go size %d, C size %d", gt.Name(), f.Name, f.Type.Size(), size)
		}
	}
}

// snake turns a Go field name into its C member name: SAddr -> saddr,
// RevNatID -> rev_nat_id.
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
