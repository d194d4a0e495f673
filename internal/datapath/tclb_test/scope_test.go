package tclb_test

import (
	"testing"

	"github.com/cilium/ebpf"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfobj"
	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
	"github.com/fastpath-net/fastpath/internal/datapath/pkttest"
)

// Interface roles, FP_ROLE_* in bpf/include/fastpath.h.
const (
	roleInternal uint32 = 0
	roleExternal uint32 = 1
)

// newEnvRole loads the instance of fp_tc_lb for interfaces of role.
func newEnvRole(t *testing.T, role uint32) *env {
	t.Helper()
	e := newEnvWith(t, func(spec *ebpf.CollectionSpec) {
		if err := spec.Variables[bpfobj.TclbVarFpIfaceRole].Set(role); err != nil {
			t.Fatal(err)
		}
	})
	e.role = role
	return e
}

// Packets an instance does not consume go on to the next program on the
// hook (TCX_NEXT), from both roles: tc_policy runs after tc_lb on a pod's
// veth, and on the node's own interfaces for the L7 proxy (docs/l7.md).
func TestPassVerdictFollowsTheRole(t *testing.T) {
	for _, c := range []struct {
		role uint32
		want uint32
	}{{roleInternal, actNext}, {roleExternal, actNext}} {
		e := newEnvRole(t, c.role)
		opts := &ebpf.RunOptions{Data: pkttest.TCPFrame(toVIP, syn, nil), Repeat: 1}
		ret, err := e.prog.Run(opts)
		if err != nil {
			t.Fatal(err)
		}
		if ret != c.want {
			t.Errorf("role %d: packet to no service: verdict %#x, want %#x", c.role, ret, c.want)
		}
	}
}

// internalOnly is a backend only the INTERNAL entry names.
var internalOnly = backend{id: 9, addr: addrPort("10.0.9.9:8080")}

// twin is the EXTERNAL entry's value when an INTERNAL twin exists.
var twin = lbmap.ServiceValue{RevNatID: revNatID, Flags: lbmap.ServiceInternalTwin}

// A frontend with both scopes (a traffic policy): internal interfaces get
// the INTERNAL entry, external ones the EXTERNAL entry. No masquerade
// address is set, so external flows are only DNATed here.
func TestScopeFollowsTheInterfaceRole(t *testing.T) {
	for _, c := range []struct {
		name string
		role uint32
		want backend
	}{
		{"internal", roleInternal, internalOnly},
		{"external", roleExternal, be1},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnvRole(t, c.role)
			e.setServiceIn(lbmap.ScopeExternal, vip, tcp, twin, be1)
			e.setServiceIn(lbmap.ScopeInternal, vip, tcp, lbmap.ServiceValue{RevNatID: revNatID + 1}, internalOnly)
			out := e.mustRun(pkttest.TCPFrame(toVIP, syn, nil), actOK)
			wantFrame(t, out, pkttest.TCPFrame(to(c.want.addr), syn, nil))
			// The reply carries the rev-NAT of the entry used.
			out = e.mustRun(pkttest.TCPFrame(from(c.want.addr), syn|ack, nil), actOK)
			wantFrame(t, out, pkttest.TCPFrame(from(vip), syn|ack, nil))
			e.wantMetrics(map[int]uint64{metricForwardNew: 1, metricReplyRevNat: 1})
		})
	}
}

// Without an INTERNAL entry, internal traffic falls back to EXTERNAL.
func TestInternalFallsBackToExternal(t *testing.T) {
	e := newEnvRole(t, roleInternal)
	e.setService(vip, tcp, revNatID, be1)
	out := e.mustRun(pkttest.TCPFrame(toVIP, syn, nil), actOK)
	wantFrame(t, out, pkttest.TCPFrame(to(be1.addr), syn, nil))
}

// The datapath looks INTERNAL up only when the EXTERNAL entry flags its
// twin: an unflagged EXTERNAL entry serves internal traffic too, whatever
// INTERNAL entry the map holds.
func TestInternalNeedsTheTwinFlag(t *testing.T) {
	e := newEnvRole(t, roleInternal)
	e.setService(vip, tcp, revNatID, be1)
	e.setServiceIn(lbmap.ScopeInternal, vip, tcp, lbmap.ServiceValue{RevNatID: revNatID + 1}, internalOnly)
	out := e.mustRun(pkttest.TCPFrame(toVIP, syn, nil), actOK)
	wantFrame(t, out, pkttest.TCPFrame(to(be1.addr), syn, nil))
}

// A flag whose INTERNAL entry is missing (the reconciler deletes it after
// clearing the flag, but an older agent may not) falls back to EXTERNAL,
// slots included: the lookup leaves the key on the scope it found.
func TestTwinFlagWithoutInternalFallsBack(t *testing.T) {
	e := newEnvRole(t, roleInternal)
	e.setServiceIn(lbmap.ScopeExternal, vip, tcp, twin, be1)
	out := e.mustRun(pkttest.TCPFrame(toVIP, syn, nil), actOK)
	wantFrame(t, out, pkttest.TCPFrame(to(be1.addr), syn, nil))
	out = e.mustRun(pkttest.TCPFrame(from(be1.addr), syn|ack, nil), actOK)
	wantFrame(t, out, pkttest.TCPFrame(from(vip), syn|ack, nil))
	e.wantMetrics(map[int]uint64{metricForwardNew: 1, metricReplyRevNat: 1})
}

// An INTERNAL entry without backends (internalTrafficPolicy: Local and no
// local endpoint) rejects internal traffic instead of falling back.
func TestEmptyInternalEntryRejects(t *testing.T) {
	e := newEnvRole(t, roleInternal)
	e.setServiceIn(lbmap.ScopeExternal, vip, tcp, twin, be1)
	e.setServiceIn(lbmap.ScopeInternal, vip, tcp, lbmap.ServiceValue{RevNatID: revNatID + 1})
	e.mustRun(pkttest.TCPFrame(toVIP, syn, nil), actRedirect)
	if n := e.ctLen(); n != 0 {
		t.Errorf("%d ct entries, want 0", n)
	}
	e.wantMetrics(map[int]uint64{metricDropNoBackend: 1})
}

// External interfaces never see INTERNAL entries: a frontend that has only
// one is not a service there.
func TestExternalIgnoresInternalEntries(t *testing.T) {
	e := newEnvRole(t, roleExternal)
	e.setServiceIn(lbmap.ScopeInternal, vip, tcp, lbmap.ServiceValue{RevNatID: revNatID}, be1)
	in := pkttest.TCPFrame(toVIP, syn, nil)
	wantFrame(t, e.mustRun(in, actOK), in)
	if n := e.ctLen(); n != 0 {
		t.Errorf("%d ct entries, want 0", n)
	}
	e.wantMetrics(nil)
}
