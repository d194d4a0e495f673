package cniserver

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fastpath-net/fastpath/internal/cniapi"
	"github.com/fastpath-net/fastpath/internal/endpoint"
	"github.com/fastpath-net/fastpath/internal/ipam"
)

// serve runs a handler without datapath or kernel state on a socket and
// returns its path; only verbs that fail before plumbing are usable.
func serve(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "fp-cniapi-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	alloc, err := ipam.Open(filepath.Join(dir, "ipam"))
	if err != nil {
		t.Fatal(err)
	}
	eps, err := endpoint.Open(filepath.Join(dir, "endpoints"))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	h := New(Config{IPAM: alloc, Endpoints: eps, Log: log})
	sock := filepath.Join(dir, "cni.sock")
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, h, log) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return sock
}

func call(t *testing.T, sock, path string, req *cniapi.Request) *cniapi.Error {
	t.Helper()
	_, err := cniapi.Call(sock, path, req, 5*time.Second)
	if err == nil {
		return nil
	}
	var e *cniapi.Error
	if !errors.As(err, &e) {
		t.Fatalf("%s: transport error %v", path, err)
	}
	return e
}

func TestAPIErrors(t *testing.T) {
	sock := serve(t)
	for _, c := range []struct {
		path string
		req  cniapi.Request
		code uint
	}{
		{cniapi.PathStatus, cniapi.Request{Network: "n"}, cniapi.CodePluginNotAvailable},
		{cniapi.PathAdd, cniapi.Request{Network: "n", IfName: "eth0", NetNS: "/x"}, cniapi.CodeInvalidEnvironment},
		{cniapi.PathAdd, cniapi.Request{ContainerID: "c", IfName: "eth0", NetNS: "/x"}, cniapi.CodeInvalidNetworkConfig},
		{cniapi.PathAdd, cniapi.Request{Network: "n", ContainerID: "c", IfName: "eth0", NetNS: "/x", MTU: 100}, cniapi.CodeInvalidNetworkConfig},
		{cniapi.PathAdd, cniapi.Request{Network: "n", ContainerID: "c", IfName: "eth0", NetNS: "/x", Args: "K8S_POD_NAME"}, cniapi.CodeInvalidEnvironment},
		{cniapi.PathAdd, cniapi.Request{Network: "n", ContainerID: "c", IfName: "eth0", NetNS: "/nonexistent/netns"}, cniapi.CodeUnknownContainer},
		{cniapi.PathCheck, cniapi.Request{Network: "n", ContainerID: "c", IfName: "eth0", NetNS: "/x"}, cniapi.CodeUnknownContainer},
		{cniapi.PathGC, cniapi.Request{}, cniapi.CodeInvalidNetworkConfig},
	} {
		e := call(t, sock, c.path, &c.req)
		if e == nil || e.Code != c.code || e.Msg == "" {
			t.Errorf("%s %+v: got %v, want code %d", c.path, c.req, e, c.code)
		}
	}
}

func TestAPIUnreachable(t *testing.T) {
	_, err := cniapi.Call(filepath.Join(t.TempDir(), "none.sock"), cniapi.PathAdd, &cniapi.Request{}, time.Second)
	if !errors.Is(err, cniapi.ErrUnreachable) {
		t.Fatalf("got %v, want ErrUnreachable", err)
	}
}

// TestConflist: what the agent installs, and what the lab reads.
func TestConflist(t *testing.T) {
	dir := t.TempDir()
	path, err := Conflist{Socket: "/s", MTU: 1450, Chained: []string{"portmap", "bandwidth", "tuning"}}.Install(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	want := `{
  "cniVersion": "1.1.0",
  "name": "fastpath",
  "plugins": [
    {
      "mtu": 1450,
      "socket": "/s",
      "type": "fastpath-cni"
    },
    {
      "capabilities": {
        "portMappings": true
      },
      "type": "portmap"
    },
    {
      "capabilities": {
        "bandwidth": true
      },
      "type": "bandwidth"
    },
    {
      "type": "tuning"
    }
  ]
}
`
	if string(got) != want {
		t.Fatalf("conflist:\n%s\nwant:\n%s", got, want)
	}
}
