package endpoint

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func key(id string) Key { return Key{Network: "net", ContainerID: id, IfName: "eth0"} }

func TestIDsUniqueAndPersistent(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := s.Put(Endpoint{Key: key("a"), IPs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}})
	b, _ := s.Put(Endpoint{Key: key("b")})
	if a == 0 || a == b {
		t.Fatalf("ids %d %d", a, b)
	}
	if err := s.Delete(key("a")); err != nil {
		t.Fatal(err)
	}
	c, _ := s.Put(Endpoint{Key: key("c")})
	if c == a {
		t.Fatalf("id %d of a deleted endpoint reused at once", a)
	}
	s2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	got := s2.List()
	if len(got) != 2 || got[0].ID != b || got[1].ID != c || got[0].ContainerID != "b" {
		t.Fatalf("after reopening: %+v", got)
	}
	d, _ := s2.Put(Endpoint{Key: key("d")})
	if d == b || d == c {
		t.Fatalf("id %d clashes after reopening", d)
	}
}

func TestUnreadableRecordReported(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "x.json"), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir)
	if err == nil || s == nil {
		t.Fatalf("Open: %v, want the unreadable record reported and a usable store", err)
	}
	if _, err := s.Put(Endpoint{Key: key("a")}); err != nil {
		t.Fatal(err)
	}
}

// TestConcurrentPut: IDs stay unique under parallel Puts (run with -race).
func TestConcurrentPut(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Put(Endpoint{Key: key(fmt.Sprint(i))}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	ids := map[uint16]bool{}
	for _, ep := range s.List() {
		if ids[ep.ID] {
			t.Fatalf("id %d twice", ep.ID)
		}
		ids[ep.ID] = true
	}
	if len(ids) != 30 {
		t.Fatalf("%d endpoints", len(ids))
	}
}
