package ctl

import (
	"net/netip"
	"testing"

	"github.com/fastpath-net/fastpath/internal/endpoint"
)

func TestFormatEndpoints(t *testing.T) {
	eps := []endpoint.Endpoint{
		{ID: 1, Key: endpoint.Key{Network: "fastpath", ContainerID: "0123456789abcdef", IfName: "eth0"},
			NetNS: "/run/netns/p1", Interface: "fpc0123456789a", Pod: endpoint.Pod{Namespace: "demo", Name: "web-1"},
			IPs: []netip.Addr{netip.MustParseAddr("10.244.1.2"), netip.MustParseAddr("fd00::2")}},
		{ID: 12, Key: endpoint.Key{Network: "fastpath", ContainerID: "short", IfName: "net1"},
			NetNS: "/run/netns/p2", Interface: "fpcbbbbbbbbbbb", IPs: []netip.Addr{netip.MustParseAddr("10.244.1.3")}},
	}
	want := `ID  POD         IPS                 INTERFACE       NETNS          CONTAINER
1   demo/web-1  10.244.1.2,fd00::2  fpc0123456789a  /run/netns/p1  0123456789ab/eth0
12  -           10.244.1.3          fpcbbbbbbbbbbb  /run/netns/p2  short/net1
`
	if got := FormatEndpoints(eps); got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
}
