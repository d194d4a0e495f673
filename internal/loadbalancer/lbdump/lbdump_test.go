package lbdump

import (
	"testing"

	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
)

func TestRoundTrip(t *testing.T) {
	text := `services: 10.96.0.10:80/TCP slot 0 -> count=2 revnat=1 flags=affinity|nodeport|0x80 affinity=10800
services: 10.96.0.10:80/TCP slot 1 -> backend=1
services: 10.96.0.10:80/TCP slot 2 -> backend=2 count=3
services: 10.96.0.10:80/TCP internal slot 0 -> count=0 revnat=3 flags=- affinity=0
services: 10.96.0.10:80/proto-99 scope-7 slot 10 -> backend=4294967295
services: [fd00::1]:443/SCTP slot 0 -> backend=5 count=0 revnat=2 flags=loadbalancer|externalip affinity=1
backends: 1 -> 10.0.1.2:8080/TCP active
backends: 2 -> 10.0.1.3:8080/UDP terminating
backends: 10 -> [fd00::2]:1/SCTP state-9
backends: 11 -> 10.0.1.4:1/TCP quarantined
revnat: 1 -> 10.96.0.10:80
revnat: 2 -> [fd00::1]:443
`
	c, err := Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	// Written back in canonical form: flags in bit order, sorted keys.
	want := `services: 10.96.0.10:80/TCP slot 0 -> count=2 revnat=1 flags=affinity|nodeport|0x80 affinity=10800
services: 10.96.0.10:80/TCP slot 1 -> backend=1
services: 10.96.0.10:80/TCP slot 2 -> backend=2 count=3
services: 10.96.0.10:80/TCP internal slot 0 -> count=0 revnat=3 flags=- affinity=0
services: 10.96.0.10:80/proto-99 scope-7 slot 10 -> backend=4294967295
services: [fd00::1]:443/SCTP slot 0 -> backend=5 count=0 revnat=2 flags=externalip|loadbalancer affinity=1
backends: 1 -> 10.0.1.2:8080/TCP active
backends: 2 -> 10.0.1.3:8080/UDP terminating
backends: 10 -> [fd00::2]:1/SCTP state-9
backends: 11 -> 10.0.1.4:1/TCP quarantined
revnat: 1 -> 10.96.0.10:80
revnat: 2 -> [fd00::1]:443
`
	if got := c.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	m, _, _, _ := lbmap.NewFakeMaps(100)
	if err := c.Write(m); err != nil {
		t.Fatal(err)
	}
	back, err := Read(m)
	if err != nil {
		t.Fatal(err)
	}
	if back.String() != want {
		t.Errorf("through the maps:\n%s", back.String())
	}
}

func TestParseErrors(t *testing.T) {
	for _, line := range []string{
		"services: 10.96.0.10:80/TCP slot 0",
		"services: 10.96.0.10:80/TCP -> count=1",
		"services: 10.96.0.10:80/TCP slot 0 -> colour=blue",
		"services: 10.96.0.10/TCP slot 0 -> count=1",
		"backends: x -> 10.0.0.1:1/TCP active",
		"backends: 1 -> 10.0.0.1:1/TCP sleepy",
		"revnat: 1 -> 10.96.0.10",
		"conntrack: 1 -> 2",
	} {
		if _, err := Parse(line); err == nil {
			t.Errorf("%q: no error", line)
		}
	}
}
