package socklb

import (
	"reflect"
	"testing"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfobj"
	"github.com/fastpath-net/fastpath/internal/datapath/layoutcheck"
)

// TestRevNatLayout checks the Go twins against the BTF of the compiled
// object, so a change to fastpath.h that forgets the Go side fails here.
func TestRevNatLayout(t *testing.T) {
	spec, err := bpfobj.LoadSocklb()
	if err != nil {
		t.Fatal(err)
	}
	m, ok := spec.Maps["fp_sock_revnat"]
	if !ok {
		t.Fatal("object has no map fp_sock_revnat")
	}
	layoutcheck.Struct(t, "", m.Key, reflect.TypeFor[RevNatKey]())
	layoutcheck.Struct(t, "", m.Value, reflect.TypeFor[RevNatValue]())
}
