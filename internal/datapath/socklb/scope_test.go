package socklb

import (
	"testing"

	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
)

// Local processes are inside the cluster: a frontend's INTERNAL entry wins
// over its EXTERNAL one, the peer shown is the VIP (the socket's rev-NAT
// record names the scope used), and without an INTERNAL entry connects fall
// back to EXTERNAL.
func TestConnectPrefersTheInternalEntry(t *testing.T) {
	e := newEnv(t)
	e.setServiceIn(lbmap.ScopeExternal, vipTCP, lbmap.ProtoTCP, 1, "b2-tcp")
	e.setServiceIn(lbmap.ScopeInternal, vipTCP, lbmap.ProtoTCP, 2, "b1-tcp")
	c := e.startClient(e.cgroup)
	for range 8 {
		r := c.do("tcp", vipTCP.String())
		if r.Errno != "" || r.Body != "b1" || r.Peer != vipTCP.String() {
			t.Fatalf("connect %s: backend %q, peer %s, errno %q; want b1 (INTERNAL) seen as the VIP", vipTCP, r.Body, r.Peer, r.Errno)
		}
	}
	e.deleteServiceIn(lbmap.ScopeInternal, vipTCP, lbmap.ProtoTCP)
	if r := c.do("tcp", vipTCP.String()); r.Body != "b2" || r.Peer != vipTCP.String() {
		t.Fatalf("without an INTERNAL entry: backend %q, peer %s; want b2 seen as the VIP", r.Body, r.Peer)
	}
}
