package socklb

import (
	"net/netip"
	"testing"

	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
)

// Local processes are inside the cluster: a frontend's INTERNAL entry wins
// over its EXTERNAL one when the EXTERNAL one flags its twin, the peer
// shown is the VIP (the socket's rev-NAT record names the scope used), and
// without the flag, or without the INTERNAL entry, connects get EXTERNAL.
func TestConnectPrefersTheInternalEntry(t *testing.T) {
	e := newEnv(t)
	e.setServiceIn(lbmap.ScopeExternal, vipTCP, lbmap.ProtoTCP, 1, "b2-tcp")
	e.setServiceIn(lbmap.ScopeInternal, vipTCP, lbmap.ProtoTCP, 2, "b1-tcp")
	c := e.startClient(e.cgroup)
	if r := c.do("tcp", vipTCP.String()); r.Body != "b2" {
		t.Fatalf("INTERNAL entry without the twin flag: backend %q, errno %q; want b2 (EXTERNAL)", r.Body, r.Errno)
	}
	e.flagTwin(vipTCP, lbmap.ProtoTCP)
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

// flagTwin sets ServiceInternalTwin on the EXTERNAL entry of vip.
func (e *env) flagTwin(vip netip.AddrPort, proto uint8) {
	e.t.Helper()
	key := lbmap.ServiceKey{Addr: lbmap.AddrFrom(vip.Addr()), Port: vip.Port(), Proto: proto}
	v, ok, err := e.lb.Services.Lookup(key)
	if err != nil || !ok {
		e.t.Fatalf("EXTERNAL entry of %s: present %v, %v", vip, ok, err)
	}
	v.Flags |= lbmap.ServiceInternalTwin
	if err := e.lb.Services.Update([]lbmap.ServiceKey{key}, []lbmap.ServiceValue{v}); err != nil {
		e.t.Fatal(err)
	}
}
