package policy_test

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/tools/txtar"

	"github.com/fastpath-net/fastpath/internal/identity"
	"github.com/fastpath-net/fastpath/internal/policy"
	"github.com/fastpath-net/fastpath/internal/policy/policytest"
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
//	trace       lines "FROM TO PORT/PROTO", each end NS/POD or an address
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

func runGolden(t *testing.T, ar *txtar.Archive) (updated bool) {
	comment := string(ar.Comment)
	eng := policy.NewEngine(identity.NewMemory(identity.MinCluster).Identity, "")
	w := policytest.NewWorld()
	if strings.Contains(comment, "base") {
		base, err := os.ReadFile("testdata/base.yaml")
		if err != nil {
			t.Fatal(err)
		}
		must(t, w.Apply(eng, base))
	}
	var traceOut string
	for i := range ar.Files {
		f := &ar.Files[i]
		switch f.Name {
		case "apply":
			must(t, w.Apply(eng, f.Data))
		case "delete":
			must(t, w.Delete(eng, f.Data))
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

func traces(t *testing.T, eng *policy.Engine, data []byte) string {
	t.Helper()
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			t.Fatalf("trace %q", line)
		}
		portS, protoS, _ := strings.Cut(f[2], "/")
		port, _ := strconv.Atoi(portS)
		proto, err := policy.ParseProto(protoS)
		if err != nil {
			t.Fatal(err)
		}
		v, err := eng.TraceEnds(f[0], f[1], proto, uint16(port))
		if err != nil {
			fmt.Fprintf(&b, "%s: error: %v\n", line, err)
			continue
		}
		b.WriteString(v.String())
	}
	return b.String()
}

// checkMatrix compares Engine.Trace with the oracle on every probe.
func checkMatrix(t *testing.T, eng *policy.Engine, w *policytest.World, step int) {
	t.Helper()
	bad := 0
	for _, pr := range w.Matrix() {
		fp, _ := policy.ParsePodName(pr.From)
		tp, _ := policy.ParsePodName(pr.To)
		v, err := eng.Trace(fp, tp, pr.Proto, pr.Port)
		if err != nil {
			t.Fatalf("trace: %v", err)
		}
		if want := w.Oracle(pr); v.Allowed != want && bad < 10 {
			bad++
			t.Errorf("step %d: %s -> %s %s/%d: engine allowed=%v, oracle %v\n%s", step, pr.From, pr.To, pr.Proto, pr.Port, v.Allowed, want, v)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
