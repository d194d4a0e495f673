package datapath

import (
	"os"
	"regexp"
	"strconv"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfobj"
	"github.com/fastpath-net/fastpath/internal/datapath/ctmap"
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

// TestCarriedCTEndsWhereV6Appended: v5's fp_ct value, as carriable
// declares it, ends exactly where v6's appended fields begin, so a carried
// entry keeps every old field and gets zero timestamps.
func TestCarriedCTEndsWhereV6Appended(t *testing.T) {
	var c carry
	for _, e := range carriable[5] {
		if e.name == "fp_ct" {
			c = e
		}
	}
	var e ctmap.Entry
	if got, want := c.oldValueSize, uint32(unsafe.Offsetof(e.TsDelta)); got != want {
		t.Fatalf("carriable says v5's fp_ct value is %d bytes; ts_delta, appended in v6, starts at %d", got, want)
	}
}
