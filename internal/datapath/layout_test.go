package datapath

import (
	"os"
	"regexp"
	"strconv"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfobj"
)

// TestLayoutVersionMatchesHeader: the version pinned in fp_layout is the
// one the BPF headers declare; bumping one without the other fails here.
func TestLayoutVersionMatchesHeader(t *testing.T) {
	src, err := os.ReadFile("../../bpf/include/fastpath.h")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^#define FP_MAP_LAYOUT_VERSION (\d+)$`).FindSubmatch(src)
	if m == nil {
		t.Fatal("no FP_MAP_LAYOUT_VERSION in bpf/include/fastpath.h")
	}
	if v, _ := strconv.Atoi(string(m[1])); v != MapLayoutVersion {
		t.Fatalf("FP_MAP_LAYOUT_VERSION is %d, datapath.MapLayoutVersion %d", v, MapLayoutVersion)
	}
}

// TestTclbDeclaresEveryPinnedMap: Load prepares tc_lb's maps first, so a
// refused upgrade changes no pin (carried or unpinned) only if tc_lb
// declares every pinned map of the other objects.
func TestTclbDeclaresEveryPinnedMap(t *testing.T) {
	tclb, err := bpfobj.LoadTclb()
	if err != nil {
		t.Fatal(err)
	}
	for name, load := range map[string]func() (*ebpf.CollectionSpec, error){
		"sock_lb": bpfobj.LoadSocklb, "tc_policy": bpfobj.LoadTcpolicy,
	} {
		cs, err := load()
		if err != nil {
			t.Fatal(err)
		}
		for m, spec := range cs.Maps {
			if _, ok := tclb.Maps[m]; spec.Pinning == ebpf.PinByName && !ok {
				t.Errorf("%s pins %s, which tc_lb does not declare", name, m)
			}
		}
	}
}
