package nettopo

import (
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/fastpath-net/fastpath/internal/testpriv"
)

func TestStarRoutesBetweenHosts(t *testing.T) {
	testpriv.Require(t)
	s, err := NewStar("topo", "client", "server")
	if err != nil {
		t.Fatal(err)
	}
	names := []string{s.Node.Name, s.Hosts[0].NS.Name, s.Hosts[1].NS.Name}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
		assertGone(t, names)
	})

	server := s.Host("server")
	l, err := server.NS.Listen("tcp", net.JoinHostPort(server.Addr.String(), "7000"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			_, _ = c.Write([]byte("hello"))
			c.Close()
		}
	}()

	var got []byte
	err = s.Host("client").NS.Do(func() error {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(server.Addr.String(), "7000"), 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		got, err = io.ReadAll(c)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "hello" {
		t.Fatalf("client read %q, want hello", got)
	}
}

func TestNewNSRejectsForeignName(t *testing.T) {
	if _, err := NewNS("lab"); err == nil || !strings.Contains(err.Error(), Prefix) {
		t.Fatalf("NewNS(lab) = %v, want an error naming the %q prefix", err, Prefix)
	}
}

func assertGone(t *testing.T, names []string) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatalf("ip netns list: %v", err)
	}
	for _, n := range names {
		if strings.Contains(string(out), n) {
			t.Errorf("namespace %s still exists after Close", n)
		}
	}
}
