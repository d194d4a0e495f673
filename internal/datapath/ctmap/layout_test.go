package ctmap

import (
	"reflect"
	"testing"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfobj"
	"github.com/fastpath-net/fastpath/internal/datapath/layoutcheck"
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
	layoutcheck.Struct(t, "", m.Key, reflect.TypeFor[Key]())
	layoutcheck.Struct(t, "", m.Value, reflect.TypeFor[Entry]())
}
