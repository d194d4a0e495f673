// Package layoutcheck compares a Go twin of a BPF map struct with the C
// struct in a compiled object's BTF, so a change to bpf/include/fastpath.h
// that forgets the Go side (or a stale object) fails a test. It needs no
// privileges: it reads specs, not kernel maps.
package layoutcheck

import (
	"reflect"
	"strings"
	"testing"
	"unicode"

	"github.com/cilium/ebpf/btf"
)

// Struct checks that gt has ct's size and that every named Go field has the
// offset and size of the C member of the same name in snake case. Blank
// padding fields have no C name and are covered by the size. obj names the
// object in messages and may be empty.
func Struct(t testing.TB, obj string, ct btf.Type, gt reflect.Type) {
	t.Helper()
	name := strings.TrimSpace(obj + " " + gt.Name())
	st, ok := btf.UnderlyingType(ct).(*btf.Struct)
	if !ok {
		t.Fatalf("%s: BTF type %v is not a struct", name, ct)
	}
	if int(st.Size) != int(gt.Size()) {
		t.Errorf("%s: Go size %d, C struct %s size %d", name, gt.Size(), st.Name, st.Size)
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
		field(t, name, st, members, f)
	}
}

func field(t testing.TB, name string, st *btf.Struct, members map[string]btf.Member, f reflect.StructField) {
	t.Helper()
	cname := Snake(f.Name)
	m, ok := members[cname]
	if !ok {
		t.Errorf("%s.%s: no C member %q in %s", name, f.Name, cname, st.Name)
		return
	}
	if off := int(m.Offset.Bytes()); off != int(f.Offset) {
		t.Errorf("%s.%s: Go offset %d, C offset %d", name, f.Name, f.Offset, off)
	}
	size, err := btf.Sizeof(m.Type)
	if err != nil {
		t.Fatalf("%s.%s: %v", name, f.Name, err)
	}
	if size != int(f.Type.Size()) {
		t.Errorf("%s.%s: Go size %d, C size %d", name, f.Name, f.Type.Size(), size)
	}
}

// Snake turns a Go field name into its C member name: SAddr -> saddr,
// RevNatID -> rev_nat_id.
func Snake(name string) string {
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
