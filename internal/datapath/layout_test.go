package datapath

import (
	"os"
	"regexp"
	"strconv"
	"testing"
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
