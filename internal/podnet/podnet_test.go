package podnet_test

import (
	"os"
	"strings"
	"testing"

	"github.com/fastpath-net/fastpath/internal/nettopo"
	"github.com/fastpath-net/fastpath/internal/podnet"
	"github.com/fastpath-net/fastpath/internal/testpriv"
)

// SetAcceptLocal turns accept_local of a host veth on and off again (the
// agent turns it off on pods' veths when it runs without the L7 proxy),
// as the node namespace's /proc/sys shows it.
func TestSetAcceptLocal(t *testing.T) {
	testpriv.Require(t)
	star, err := nettopo.NewStar("podnet", "pod")
	if err != nil {
		t.Fatal(err)
	}
	defer star.Close()
	ifc := star.Hosts[0].NodeIf
	read := func() string {
		t.Helper()
		var v []byte
		err := star.Node.Do(func() (err error) {
			v, err = os.ReadFile("/proc/sys/net/ipv4/conf/" + ifc + "/accept_local")
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(v))
	}
	if got := read(); got != "0" {
		t.Fatalf("accept_local of a new veth is %s, want 0", got)
	}
	for _, step := range []struct {
		set  func() error
		want string
	}{
		{func() error { return podnet.AcceptLocal(star.Node.Path(), ifc) }, "1"},
		{func() error { return podnet.SetAcceptLocal(star.Node.Path(), ifc, false) }, "0"},
		{func() error { return podnet.SetAcceptLocal(star.Node.Path(), ifc, true) }, "1"},
	} {
		if err := step.set(); err != nil {
			t.Fatal(err)
		}
		if got := read(); got != step.want {
			t.Errorf("accept_local is %s, want %s", got, step.want)
		}
	}
	if err := podnet.SetAcceptLocal(star.Node.Path(), "fp-no-such-if", false); err == nil {
		t.Error("SetAcceptLocal on a missing interface: no error")
	}
}
