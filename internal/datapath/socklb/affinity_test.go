package socklb

import (
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfmap"
	"github.com/fastpath-net/fastpath/internal/datapath/ctmap"
	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
)

// Session affinity in the socket LB knows a client by its netns cookie:
// every socket of every process in one namespace is one client.

const affinityTimeout = 60 // seconds

// setAffinity turns on ClientIP affinity for the service at vip, as the
// reconciler writes it.
func (e *env) setAffinity(vip netip.AddrPort, proto uint8) {
	e.t.Helper()
	key := lbmap.ServiceKey{Addr: lbmap.AddrFrom(vip.Addr()), Port: vip.Port(), Proto: proto}
	v, ok, err := e.lb.Services.Lookup(key)
	if err != nil || !ok {
		e.t.Fatalf("service %s: %v, %v", vip, ok, err)
	}
	v.Flags |= lbmap.ServiceAffinity
	v.AffinityTimeout = affinityTimeout
	if err := e.lb.Services.Update([]lbmap.ServiceKey{key}, []lbmap.ServiceValue{v}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) affinityMap() *bpfmap.Kernel[lbmap.AffinityKey, lbmap.AffinityValue] {
	return bpfmap.NewKernel[lbmap.AffinityKey, lbmap.AffinityValue](e.objs.FpAffinity, "fp_affinity")
}

// netnsCookie asks the kernel for the cookie of the test namespace, the
// same value bpf_get_netns_cookie returns for its sockets.
func (e *env) netnsCookie() uint64 {
	e.t.Helper()
	var cookie uint64
	err := inNetns(e.nsPath, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		n := uint32(unsafe.Sizeof(cookie))
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_NETNS_COOKIE,
			uintptr(unsafe.Pointer(&cookie)), uintptr(unsafe.Pointer(&n)), 0)
		if errno != 0 {
			return errno
		}
		return nil
	})
	if err != nil {
		e.t.Fatalf("SO_NETNS_COOKIE: %v", err)
	}
	return cookie
}

// Two processes of one namespace, TCP connects and UDP datagrams: each
// service's clients all reach one backend, and the map holds one entry per
// service, keyed by the namespace.
func TestAffinityKeepsANetnsOnOneBackend(t *testing.T) {
	e := newEnv(t)
	e.setService(vipTCP, lbmap.ProtoTCP, 1, "b1-tcp", "b2-tcp")
	e.setService(vipUDP, lbmap.ProtoUDP, 2, "b1-udp", "b2-udp")
	e.setAffinity(vipTCP, lbmap.ProtoTCP)
	e.setAffinity(vipUDP, lbmap.ProtoUDP)
	clients := []*client{e.startClient(e.cgroup), e.startClient(e.cgroup)}

	picked := map[string]string{} // op -> backend
	for i := range rounds {
		for _, op := range []string{"tcp", "udp"} {
			addr := vipTCP.String()
			if op == "udp" {
				addr = vipUDP.String()
			}
			r := clients[i%2].do(op, addr)
			if r.Errno != "" || r.Err != "" {
				t.Fatalf("%s %s: %s (%s)", op, addr, r.Errno, r.Err)
			}
			if first, ok := picked[op]; ok && r.Body != first {
				t.Fatalf("%s round %d reached %s, the first reached %s", op, i, r.Body, first)
			}
			picked[op] = r.Body
		}
	}

	all, err := e.affinityMap().All()
	if err != nil {
		t.Fatal(err)
	}
	cookie := e.netnsCookie()
	want := map[lbmap.AffinityKey]uint32{
		{NetnsCookie: cookie, RevNatID: 1}: backendIDs[picked["tcp"]+"-tcp"],
		{NetnsCookie: cookie, RevNatID: 2}: backendIDs[picked["udp"]+"-udp"],
	}
	if len(all) != len(want) {
		t.Fatalf("affinity map %v, want one entry per service for netns %d", all, cookie)
	}
	for k, id := range want {
		if v, ok := all[k]; !ok || v.BackendID != id {
			t.Errorf("entry %v = %+v (present %v), want backend %d", k, v, ok, id)
		}
	}
}

// A memory written for the namespace is followed while fresh, and ignored
// once older than the timeout.
func TestAffinityFollowsAndExpiresTheNetnsMemory(t *testing.T) {
	e := newEnv(t)
	e.setService(vipTCP, lbmap.ProtoTCP, 1, "b1-tcp", "b2-tcp")
	e.setAffinity(vipTCP, lbmap.ProtoTCP)
	c := e.startClient(e.cgroup)
	aff := e.affinityMap()
	key := lbmap.AffinityKey{NetnsCookie: e.netnsCookie(), RevNatID: 1}
	picks := func(age time.Duration) map[string]int {
		got := map[string]int{}
		for range rounds {
			v := lbmap.AffinityValue{BackendID: backendIDs["b2-tcp"], Slot: 2, LastUsed: ctmap.Now() - uint64(age)}
			if err := aff.Update([]lbmap.AffinityKey{key}, []lbmap.AffinityValue{v}); err != nil {
				t.Fatal(err)
			}
			r := c.do("tcp", vipTCP.String())
			if r.Errno != "" {
				t.Fatalf("connect: %s (%s)", r.Errno, r.Err)
			}
			got[r.Body]++
		}
		return got
	}
	if got := picks((affinityTimeout - 1) * time.Second); got["b2"] != rounds {
		t.Errorf("fresh memory of b2: connects reached %v, want all %d on b2", got, rounds)
	}
	// Followed, the stale memory would send all to b2; random, that has probability 2^-32.
	if got := picks((affinityTimeout + 1) * time.Second); got["b1"] == 0 {
		t.Errorf("stale memory of b2: connects reached %v, want a fresh random pick", got)
	}
}
