package loadbalancer_test

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/tools/txtar"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfmap"
	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
	lb "github.com/fastpath-net/fastpath/internal/loadbalancer"
	"github.com/fastpath-net/fastpath/internal/loadbalancer/lbdump"
	"github.com/fastpath-net/fastpath/internal/servicefile"
)

var update = flag.Bool("update", false, "rewrite the golden sections of testdata/*.txtar")

// TestScripts runs testdata/*.txtar. The archive's comment is a script, one
// command a line; the files are its inputs and golden outputs:
//
//	capacity N [M=N...]     new fake maps of N entries each, new table and reconciler;
//	                        M=N (M one of services, backends, revnat) sizes one map
//	services [-source=S] F  parse file F, make source S's services what it says
//	sync | resync           run the reconciler
//	restart                 new table and reconciler on the same maps, then Restore
//	load F | unload F       write / delete the entries of F (lbdump form) behind the reconciler's back
//	dump F                  the maps must read as F
//	error F                 the last command's error must read as F
//	ops services=W/D backends=W/D revnat=W/D
//	                        writes/deletes per map since the last ops, load or unload
//
// A command prefixed with "! " must fail; without it, it must succeed.
// go test -run TestScripts -update rewrites the dump and error files.
func TestScripts(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txtar")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txtar"), func(t *testing.T) {
			ar, err := txtar.ParseFile(file)
			if err != nil {
				t.Fatal(err)
			}
			s := newScript(t, ar)
			s.run()
			if *update && s.updated {
				if err := os.WriteFile(file, txtar.Format(ar), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

type script struct {
	t       *testing.T
	ar      *txtar.Archive
	updated bool

	maps    lbmap.Maps
	svcMap  *bpfmap.Fake[lbmap.ServiceKey, lbmap.ServiceValue]
	beMap   *bpfmap.Fake[uint32, lbmap.Backend]
	revMap  *bpfmap.Fake[uint32, lbmap.RevNat]
	table   *lb.Table
	rec     *lb.Reconciler
	sources map[string][]lb.ServiceName
	lastErr error
	ops     [3][2]int
}

func newScript(t *testing.T, ar *txtar.Archive) *script {
	s := &script{t: t, ar: ar}
	s.fresh(65536, 65536, 65536)
	return s
}

func (s *script) fresh(capacity ...int) {
	f := newFakesSized(capacity[0], capacity[1], capacity[2])
	s.maps, s.svcMap, s.beMap, s.revMap = f.maps, f.svc, f.be, f.rev
	s.restartAgent()
	s.ops = [3][2]int{}
}

func (s *script) restartAgent() {
	s.table = lb.NewTable()
	s.rec = lb.NewReconciler(s.maps, lb.ReconcilerOptions{})
	s.sources = map[string][]lb.ServiceName{}
}

func (s *script) run() {
	for i, line := range strings.Split(string(s.ar.Comment), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		s.t.Logf("> %s", line)
		wantErr := strings.HasPrefix(line, "! ")
		args := strings.Fields(strings.TrimPrefix(line, "! "))
		err := s.exec(args)
		s.countOps()
		switch {
		case wantErr && err == nil:
			s.t.Fatalf("line %d: %s: succeeded, want an error", i+1, line)
		case !wantErr && err != nil:
			s.t.Fatalf("line %d: %s: %v", i+1, line, err)
		}
		if args[0] != "error" {
			s.lastErr = err
		}
	}
}

// countOps adds the fakes' counters after every command, so load and
// unload can take theirs back out.
func (s *script) countOps() {
	for i, ops := range []func() (int, int){s.svcMap.Ops, s.beMap.Ops, s.revMap.Ops} {
		w, d := ops()
		s.ops[i][0] += w
		s.ops[i][1] += d
	}
}

func (s *script) exec(args []string) error {
	need := func(n int) {
		if len(args) != n+1 {
			s.t.Fatalf("%s: want %d arguments, got %d", args[0], n, len(args)-1)
		}
	}
	switch args[0] {
	case "capacity":
		s.fresh(s.capacities(args[1:])...)
		return nil
	case "services":
		source := "default"
		if len(args) == 3 && strings.HasPrefix(args[1], "-source=") {
			source, args = strings.TrimPrefix(args[1], "-source="), append(args[:1], args[2])
		}
		need(1)
		return s.services(source, s.file(args[1]))
	case "sync":
		need(0)
		return s.rec.Sync(s.table)
	case "resync":
		need(0)
		return s.rec.Resync(s.table)
	case "restart":
		need(0)
		s.restartAgent()
		return s.rec.Restore()
	case "load", "unload":
		need(1)
		c, err := lbdump.Parse(s.file(args[1]))
		if err != nil {
			s.t.Fatal(err)
		}
		if args[0] == "load" {
			err = c.Write(s.maps)
		} else {
			err = c.Delete(s.maps)
		}
		s.countOps()
		s.ops = [3][2]int{}
		return err
	case "dump":
		need(1)
		c, err := lbdump.Read(s.maps)
		if err != nil {
			s.t.Fatal(err)
		}
		s.golden(args[1], c.String())
		return nil
	case "error":
		need(1)
		got := "<nil>\n"
		if s.lastErr != nil {
			got = s.lastErr.Error() + "\n"
		}
		s.golden(args[1], got)
		return nil
	case "ops":
		need(3)
		got := fmt.Sprintf("ops services=%d/%d backends=%d/%d revnat=%d/%d",
			s.ops[0][0], s.ops[0][1], s.ops[1][0], s.ops[1][1], s.ops[2][0], s.ops[2][1])
		if want := strings.Join(args, " "); got != want {
			s.t.Errorf("got  %s\nwant %s", got, want)
		}
		s.ops = [3][2]int{}
		return nil
	}
	s.t.Fatalf("unknown command %q", args[0])
	return nil
}

// capacities parses "N [services=N] [backends=N] [revnat=N]" into the
// sizes of the services, backends and rev-NAT maps.
func (s *script) capacities(args []string) []int {
	if len(args) == 0 {
		s.t.Fatal("capacity: want N [services=N] [backends=N] [revnat=N]")
	}
	atoi := func(a string) int {
		n, err := strconv.Atoi(a)
		if err != nil {
			s.t.Fatalf("capacity: %v", err)
		}
		return n
	}
	n := atoi(args[0])
	sizes := []int{n, n, n}
	for _, a := range args[1:] {
		name, val, _ := strings.Cut(a, "=")
		i := slices.Index([]string{"services", "backends", "revnat"}, name)
		if i < 0 {
			s.t.Fatalf("capacity: unknown map %q", name)
		}
		sizes[i] = atoi(val)
	}
	return sizes
}

// services makes the source's services in the table what the file says.
func (s *script) services(source, text string) error {
	svcs, err := servicefile.Parse([]byte(text))
	if err != nil {
		return err
	}
	var errs []string
	now := map[lb.ServiceName]bool{}
	for _, svc := range svcs {
		now[svc.Name] = true
		if err := s.table.Upsert(svc); err != nil {
			errs = append(errs, err.Error())
		}
	}
	for _, name := range s.sources[source] {
		if !now[name] {
			s.table.Delete(name)
		}
	}
	s.sources[source] = nil
	for _, svc := range svcs {
		s.sources[source] = append(s.sources[source], svc.Name)
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return nil
}

func (s *script) file(name string) string {
	for _, f := range s.ar.Files {
		if f.Name == name {
			return string(f.Data)
		}
	}
	s.t.Fatalf("no file %q in the archive", name)
	return ""
}

// golden compares got with the named file, or rewrites it with -update.
func (s *script) golden(name, got string) {
	for i, f := range s.ar.Files {
		if f.Name != name {
			continue
		}
		if string(f.Data) == got {
			return
		}
		if *update {
			s.ar.Files[i].Data = []byte(got)
			s.updated = true
			return
		}
		s.t.Errorf("%s differs:\n%s", name, diffLines(string(f.Data), got))
		return
	}
	if !*update {
		s.t.Fatalf("no golden file %q (run with -update)", name)
	}
	s.ar.Files = append(s.ar.Files, txtar.File{Name: name, Data: []byte(got)})
	s.updated = true
}

// diffLines shows the lines only one side has, which is enough for sorted dumps.
func diffLines(want, got string) string {
	in := func(text string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(text, "\n") {
			m[l] = true
		}
		return m
	}
	w, g := in(want), in(got)
	var b bytes.Buffer
	for _, l := range strings.Split(want, "\n") {
		if !g[l] {
			fmt.Fprintf(&b, "- %s\n", l)
		}
	}
	for _, l := range strings.Split(got, "\n") {
		if !w[l] {
			fmt.Fprintf(&b, "+ %s\n", l)
		}
	}
	if b.Len() == 0 {
		return "(same lines, different order)\n--- want\n" + want + "--- got\n" + got
	}
	return b.String()
}
