package svctranslate_test

import (
	"bytes"
	"cmp"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"golang.org/x/tools/txtar"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/runtime"
	k8sjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
	"github.com/fastpath-net/fastpath/internal/k8s/svctranslate"
	lb "github.com/fastpath-net/fastpath/internal/loadbalancer"
	"github.com/fastpath-net/fastpath/internal/loadbalancer/lbdump"
)

var update = flag.Bool("update", false, "rewrite the golden files (result, maps) of testdata/*.txtar")

// TestGolden runs testdata/*.txtar. The archive's comment holds settings,
// one "key: value" a line (# lines are prose):
//
//	node: NAME                 this node's name; its Node object, if input.yaml
//	                           has one, gives the zone and addresses
//	nodeport-addresses: CIDRS  comma-separated --nodeport-addresses
//	service-proxy-name: NAME   --service-proxy-name
//
// input.yaml holds Services, EndpointSlices and Nodes as the apiserver
// stores them (documents separated by ---). Every Service is translated with
// all the slices, upserted into a table in name order and synced to fake
// maps. "result" is each Service's translation, readable; "maps" is what the
// maps then hold (lbdump). go test -run TestGolden -update rewrites both.
func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txtar")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txtar"), func(t *testing.T) {
			ar, err := txtar.ParseFile(file)
			if err != nil {
				t.Fatal(err)
			}
			result, maps := runCase(t, ar)
			changed := golden(t, ar, "result", result)
			changed = golden(t, ar, "maps", maps) || changed
			if *update && changed {
				if err := os.WriteFile(file, txtar.Format(ar), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// input is one archive's objects and settings.
type input struct {
	svcs   []*corev1.Service
	slices []*discoveryv1.EndpointSlice
	nodes  []*corev1.Node
	node   svctranslate.Node
}

func runCase(t *testing.T, ar *txtar.Archive) (result, maps string) {
	in := parseInput(t, ar)
	slices.SortFunc(in.svcs, func(a, b *corev1.Service) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	m, _, _, _ := lbmap.NewFakeMaps(1 << 16)
	table := lb.NewTable()
	var out strings.Builder
	trimmed := trimAll(t, in.slices)
	for _, svc := range in.svcs {
		res := svctranslate.Translate(svc, in.slices, in.node)
		checkTrimmed(t, res, svc, trimmed, in.node)
		writeResult(&out, res)
		if res.Skipped != "" {
			continue
		}
		if err := table.Upsert(res.Service); err != nil {
			fmt.Fprintf(&out, "  table: %v\n", err)
		}
	}
	if err := lb.NewReconciler(m, lb.ReconcilerOptions{}).Sync(table); err != nil {
		t.Fatalf("sync: %v", err)
	}
	c, err := lbdump.Read(m)
	if err != nil {
		t.Fatal(err)
	}
	return out.String(), c.String()
}

// trimAll returns trimmed copies of slices, as the informer cache holds
// them. Trimming twice changes nothing.
func trimAll(t *testing.T, slices []*discoveryv1.EndpointSlice) []*discoveryv1.EndpointSlice {
	out := make([]*discoveryv1.EndpointSlice, len(slices))
	for i, s := range slices {
		out[i] = s.DeepCopy()
		svctranslate.TrimSlice(out[i])
		again := out[i].DeepCopy()
		svctranslate.TrimSlice(again)
		if !equality.Semantic.DeepEqual(out[i], again) {
			t.Errorf("slice %s: trimming twice differs from once", s.Name)
		}
	}
	return out
}

// checkTrimmed fails when the trimmed objects the watcher's caches hold
// translate otherwise than the objects themselves: a field Translate reads
// that TrimService or TrimSlice drops. Trimming twice changes nothing.
func checkTrimmed(t *testing.T, want svctranslate.Result, svc *corev1.Service, slices []*discoveryv1.EndpointSlice, node svctranslate.Node) {
	t.Helper()
	ts := svc.DeepCopy()
	svctranslate.TrimService(ts)
	again := ts.DeepCopy()
	svctranslate.TrimService(again)
	if !equality.Semantic.DeepEqual(ts, again) {
		t.Errorf("%s: trimming twice differs from once", svc.Name)
	}
	if got := svctranslate.Translate(ts, slices, node); !reflect.DeepEqual(got, want) {
		var g, w strings.Builder
		writeResult(&g, got)
		writeResult(&w, want)
		t.Errorf("%s translates otherwise once trimmed:\n%s", svc.Name, diff(w.String(), g.String()))
	}
}

func writeResult(b *strings.Builder, res svctranslate.Result) {
	if res.Skipped != "" {
		fmt.Fprintf(b, "%s: skipped: %s\n", res.Service.Name, res.Skipped)
	} else {
		fmt.Fprintf(b, "%s: %d frontends\n", res.Service.Name, len(res.Service.Frontends))
	}
	if res.HealthCheckNodePort != 0 {
		fmt.Fprintf(b, "  healthCheckNodePort: %d\n", res.HealthCheckNodePort)
	}
	fmt.Fprintf(b, "  usesNodeAddresses=%v usesZone=%v\n", res.UsesNodeAddresses, res.UsesZone)
	for _, fe := range res.Service.Frontends {
		fmt.Fprintf(b, "  %s %s", fe.Frontend, fe.Type)
		if fe.AffinityTimeout != 0 {
			fmt.Fprintf(b, " affinity=%s", fe.AffinityTimeout)
		}
		if len(fe.SourceRanges) > 0 {
			fmt.Fprintf(b, " sourceRanges=%v", fe.SourceRanges)
		}
		b.WriteString(" ->")
		for _, be := range fe.Backends {
			fmt.Fprintf(b, " %s(%s)", be.L4Addr, be.State)
		}
		b.WriteString("\n")
	}
	for _, p := range res.Problems {
		fmt.Fprintf(b, "  problem: %s\n", p)
	}
	for _, p := range res.Notes {
		fmt.Fprintf(b, "  note: %s\n", p)
	}
}

func parseInput(t *testing.T, ar *txtar.Archive) input {
	var in input
	settings := map[string]string{}
	for _, line := range strings.Split(string(ar.Comment), "\n") {
		if line = strings.TrimSpace(line); line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			t.Fatalf("comment line %q: want key: value", line)
		}
		settings[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	for _, obj := range decodeAll(t, file(t, ar, "input.yaml")) {
		switch o := obj.(type) {
		case *corev1.Service:
			in.svcs = append(in.svcs, o)
		case *discoveryv1.EndpointSlice:
			in.slices = append(in.slices, o)
		case *corev1.Node:
			in.nodes = append(in.nodes, o)
		default:
			t.Fatalf("input.yaml: unexpected %T", obj)
		}
	}
	in.node = nodeOf(t, settings, in.nodes)
	return in
}

func nodeOf(t *testing.T, settings map[string]string, nodes []*corev1.Node) svctranslate.Node {
	name := settings["node"]
	var cidrs []netip.Prefix
	if s := settings["nodeport-addresses"]; s != "" {
		for _, c := range strings.Split(s, ",") {
			p, err := netip.ParsePrefix(strings.TrimSpace(c))
			if err != nil {
				t.Fatalf("nodeport-addresses: %v", err)
			}
			cidrs = append(cidrs, p)
		}
	}
	var obj *corev1.Node
	for _, n := range nodes {
		if n.Name == name {
			obj = n
		}
	}
	node := svctranslate.NodeFromObject(name, obj, cidrs)
	node.ProxyName = settings["service-proxy-name"]
	return node
}

// decodeAll decodes strictly: a misspelt field fails the test instead of
// silently testing something else.
func decodeAll(t *testing.T, data string) []runtime.Object {
	s := k8sjson.NewSerializerWithOptions(k8sjson.DefaultMetaFactory, scheme.Scheme, scheme.Scheme,
		k8sjson.SerializerOptions{Yaml: true, Strict: true})
	var out []runtime.Object
	for i, doc := range strings.Split("\n"+data, "\n---\n") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		obj, _, err := s.Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("input.yaml document %d: %v", i, err)
		}
		out = append(out, obj)
	}
	return out
}

func file(t *testing.T, ar *txtar.Archive, name string) string {
	for _, f := range ar.Files {
		if f.Name == name {
			return string(f.Data)
		}
	}
	t.Fatalf("no file %q in the archive", name)
	return ""
}

// golden compares got with the named file, or rewrites it with -update, and
// reports whether the archive changed.
func golden(t *testing.T, ar *txtar.Archive, name, got string) bool {
	for i, f := range ar.Files {
		if f.Name != name {
			continue
		}
		if string(f.Data) == got {
			return false
		}
		if *update {
			ar.Files[i].Data = []byte(got)
			return true
		}
		t.Errorf("%s differs (run with -update to accept):\n%s", name, diff(string(f.Data), got))
		return false
	}
	if !*update {
		t.Fatalf("no golden file %q (run with -update)", name)
	}
	ar.Files = append(ar.Files, txtar.File{Name: name, Data: []byte(got)})
	return true
}

func diff(want, got string) string {
	var b bytes.Buffer
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for _, l := range w {
		if !slices.Contains(g, l) {
			fmt.Fprintf(&b, "- %s\n", l)
		}
	}
	for _, l := range g {
		if !slices.Contains(w, l) {
			fmt.Fprintf(&b, "+ %s\n", l)
		}
	}
	if b.Len() == 0 {
		return "(same lines, different order)\n--- want\n" + want + "--- got\n" + got
	}
	return b.String()
}
