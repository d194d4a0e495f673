package agent

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"testing"

	"github.com/fastpath-net/fastpath/internal/datapath"
	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
	"github.com/fastpath-net/fastpath/internal/loadbalancer/lbdump"
	"github.com/fastpath-net/fastpath/internal/testpriv"
)

// olderMaps is what an agent before the internal-twin flag left for an
// externalTrafficPolicy: Local frontend: both scopes, no flag.
const olderMaps = `services: 192.0.2.10:80/TCP slot 0 -> count=1 revnat=1 flags=externalip|ext-local affinity=0
services: 192.0.2.10:80/TCP slot 1 -> backend=1
services: 192.0.2.10:80/TCP internal slot 0 -> count=2 revnat=2 flags=externalip affinity=0
services: 192.0.2.10:80/TCP internal slot 1 -> backend=1
services: 192.0.2.10:80/TCP internal slot 2 -> backend=2
backends: 1 -> 10.0.1.2:8080/TCP active
backends: 2 -> 10.0.2.2:8080/TCP active
revnat: 1 -> 192.0.2.10:80
revnat: 2 -> 192.0.2.10:80
`

// An agent starting on maps of an older agent flags the EXTERNAL twins of
// their INTERNAL entries in start, where its programs attach, before any
// source delivers a service: its programs find INTERNAL entries only
// through the flag, and the first full resync may be far off.
func TestStartFlagsTwinsOfOlderMaps(t *testing.T) {
	testpriv.Require(t)
	cfg := Config{
		PinDir: fmt.Sprintf("/sys/fs/bpf/fp-twin-%d", os.Getpid()),
		Sizes:  datapath.Sizes{CT: 4096},
		Log:    slog.New(slog.DiscardHandler),
	}
	t.Cleanup(func() { _ = datapath.Uninstall(cfg.PinDir) })
	dpCfg, err := datapathConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dp, err := datapath.Load(dpCfg)
	if err != nil {
		t.Fatal(err)
	}
	c, err := lbdump.Parse(olderMaps)
	if err == nil {
		err = c.Write(dp.LB)
	}
	dp.Close()
	if err != nil {
		t.Fatal(err)
	}

	a, err := start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.dp.Close()
	key := lbmap.ServiceKey{Addr: lbmap.AddrFrom(netip.MustParseAddr("192.0.2.10")), Port: 80, Proto: lbmap.ProtoTCP}
	v, ok, err := a.dp.LB.Services.Lookup(key)
	if err != nil || !ok || v.Flags&lbmap.ServiceInternalTwin == 0 {
		t.Fatalf("%v after start: %+v (present %v, %v), want the internal-twin flag", key, v, ok, err)
	}
}
