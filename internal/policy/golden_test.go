package policy_test

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/tools/txtar"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/fastpath-net/fastpath/internal/identity"
	"github.com/fastpath-net/fastpath/internal/policy"
)

var update = flag.Bool("update", false, "rewrite the want sections of testdata/*.txtar")

// TestGolden runs testdata/*.txtar. The archive's comment may hold the
// words "base" (apply testdata/base.yaml first: namespaces x, y, z with pods
// a, b, c each, serving 80 and 81 on TCP, UDP and SCTP as the upstream
// netpol e2e suite does) and "no-oracle". Its files run in order:
//
//	apply       Kubernetes YAML (Namespace, Pod, NetworkPolicy), upserted
//	delete      lines "namespace N", "pod NS/N", "networkpolicy NS/N"
//	want        Engine.Render() after Changes must read as this
//	trace       lines "NS/FROM NS/TO PORT/PROTO"
//	want-trace  the traces' output
//
// After every want, unless "no-oracle", the reachability matrix (every pod
// pair, ports 80 and 81, TCP, UDP, SCTP) from Engine.Trace must equal the
// one of oracle(), a direct reading of the NetworkPolicy API's semantics
// that shares no code with the Engine.
func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txtar")
	if err != nil || len(files) == 0 {
		t.Fatalf("no cases: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txtar"), func(t *testing.T) {
			ar, err := txtar.ParseFile(file)
			if err != nil {
				t.Fatal(err)
			}
			updated := runGolden(t, ar)
			if *update && updated {
				if err := os.WriteFile(file, txtar.Format(ar), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

type world struct {
	ns   map[string]*corev1.Namespace
	pods map[string]*corev1.Pod
	pols map[string]*networkingv1.NetworkPolicy
}

func runGolden(t *testing.T, ar *txtar.Archive) (updated bool) {
	comment := string(ar.Comment)
	eng := policy.NewEngine(identity.NewMemory(identity.MinCluster).Identity, "")
	w := &world{ns: map[string]*corev1.Namespace{}, pods: map[string]*corev1.Pod{}, pols: map[string]*networkingv1.NetworkPolicy{}}
	if strings.Contains(comment, "base") {
		base, err := os.ReadFile("testdata/base.yaml")
		if err != nil {
			t.Fatal(err)
		}
		apply(t, eng, w, base)
	}
	var traceOut string
	for i := range ar.Files {
		f := &ar.Files[i]
		switch f.Name {
		case "apply":
			apply(t, eng, w, f.Data)
		case "delete":
			del(t, eng, w, f.Data)
		case "want":
			eng.Changes()
			got := eng.Render()
			if got != string(f.Data) {
				if *update {
					f.Data, updated = []byte(got), true
				} else {
					t.Errorf("file %d (want) differs; go test -update rewrites it.\n--- got\n%s--- want\n%s", i, got, f.Data)
				}
			}
			if !strings.Contains(comment, "no-oracle") {
				checkMatrix(t, eng, w, i)
			}
		case "trace":
			eng.Changes()
			traceOut = traces(t, eng, f.Data)
		case "want-trace":
			if traceOut != string(f.Data) {
				if *update {
					f.Data, updated = []byte(traceOut), true
				} else {
					t.Errorf("file %d (want-trace) differs.\n--- got\n%s--- want\n%s", i, traceOut, f.Data)
				}
			}
		default:
			t.Fatalf("unknown file %q", f.Name)
		}
	}
	return updated
}

func apply(t *testing.T, eng *policy.Engine, w *world, data []byte) {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := r.Read()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		var meta struct{ Kind string }
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatal(err)
		}
		switch meta.Kind {
		case "":
			continue
		case "Namespace":
			var ns corev1.Namespace
			mustUnmarshal(t, doc, &ns)
			if ns.Labels == nil {
				ns.Labels = map[string]string{}
			}
			ns.Labels["kubernetes.io/metadata.name"] = ns.Name // as the apiserver does
			w.ns[ns.Name] = &ns
			eng.UpsertNamespace(&ns)
		case "Pod":
			var p corev1.Pod
			mustUnmarshal(t, doc, &p)
			w.pods[p.Namespace+"/"+p.Name] = &p
			eng.UpsertPod(&p)
		case "NetworkPolicy":
			var np networkingv1.NetworkPolicy
			mustUnmarshal(t, doc, &np)
			w.pols[np.Namespace+"/"+np.Name] = &np
			eng.UpsertPolicy(&np)
		default:
			t.Fatalf("kind %q", meta.Kind)
		}
	}
}

func mustUnmarshal(t *testing.T, doc []byte, v any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(doc, v); err != nil {
		t.Fatalf("%v in\n%s", err, doc)
	}
}

func del(t *testing.T, eng *policy.Engine, w *world, data []byte) {
	t.Helper()
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		kind, name, _ := strings.Cut(line, " ")
		ns, n, _ := strings.Cut(name, "/")
		switch kind {
		case "namespace":
			delete(w.ns, name)
			eng.DeleteNamespace(name)
		case "pod":
			delete(w.pods, name)
			eng.DeletePod(policy.PodName{Namespace: ns, Name: n})
		case "networkpolicy":
			delete(w.pols, name)
			eng.DeletePolicy(ns, n)
		default:
			t.Fatalf("delete %q", line)
		}
	}
}

func traces(t *testing.T, eng *policy.Engine, data []byte) string {
	t.Helper()
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			t.Fatalf("trace %q", line)
		}
		from, _ := policy.ParsePodName(f[0])
		to, _ := policy.ParsePodName(f[1])
		portS, protoS, _ := strings.Cut(f[2], "/")
		port, _ := strconv.Atoi(portS)
		proto, err := policy.ParseProto(protoS)
		if err != nil {
			t.Fatal(err)
		}
		v, err := eng.Trace(from, to, proto, uint16(port))
		if err != nil {
			fmt.Fprintf(&b, "%s: error: %v\n", line, err)
			continue
		}
		b.WriteString(v.String())
	}
	return b.String()
}

// checkMatrix compares Engine.Trace with the oracle on every pod pair.
func checkMatrix(t *testing.T, eng *policy.Engine, w *world, step int) {
	t.Helper()
	names := sortedNames(w.pods)
	bad := 0
	for _, from := range names {
		for _, to := range names {
			if from == to {
				continue
			}
			for _, proto := range []policy.Proto{policy.TCP, policy.UDP, policy.SCTP} {
				for _, port := range []uint16{80, 81} {
					fp, _ := policy.ParsePodName(from)
					tp, _ := policy.ParsePodName(to)
					v, err := eng.Trace(fp, tp, proto, port)
					if err != nil {
						t.Fatalf("trace: %v", err)
					}
					want := oracle(w, w.pods[from], w.pods[to], proto, port)
					if v.Allowed != want && bad < 10 {
						bad++
						t.Errorf("step %d: %s -> %s %s/%d: engine allowed=%v, oracle %v\n%s", step, from, to, proto, port, v.Allowed, want, v)
					}
				}
			}
		}
	}
}

func sortedNames[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sortStrings(out)
	return out
}
