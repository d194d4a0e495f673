package tclb_test

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfmap"
	"github.com/fastpath-net/fastpath/internal/datapath/bpfobj"
	"github.com/fastpath-net/fastpath/internal/datapath/ctmap"
	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
	"github.com/fastpath-net/fastpath/internal/datapath/pkttest"
	"github.com/fastpath-net/fastpath/internal/nettopo"
	"github.com/fastpath-net/fastpath/internal/testpriv"
)

// Verdicts of a TC program, as run reports them. actOK is "passed on":
// TC_ACT_OK from an external instance, TCX_NEXT (so tc_policy after it
// still runs) from an internal one; the other value of the two is
// reported as actWrongPass, which no test expects.
const (
	actOK        = 0
	actShot      = 2
	actRedirect  = 7
	actNext      = 0xffffffff // TCX_NEXT (-1) as the run's u32
	actWrongPass = 0xbad
)

// Indexes of fp_metrics (enum fp_metric_index in bpf/include/fastpath.h).
const (
	metricForwardNew = iota
	metricForwardCT
	metricReplyRevNat
	metricICMPErrRevNat
	metricDropNoBackend
	metricDropCTFull
	metricDropMalformed
	metricDropBackendGone
	metricSockConnect
	metricSockNoBackend
	metricDropSNATNoPort
	metricDropNoRoute
	metricDropSourceRange
	metricDropSpoofed
	metricMax
)

var metricNames = [metricMax]string{
	"FORWARD_NEW", "FORWARD_CT", "REPLY_REVNAT", "ICMP_ERR_REVNAT", "DROP_NO_BACKEND",
	"DROP_CT_FULL", "DROP_MALFORMED", "DROP_BACKEND_GONE", "SOCK_CONNECT", "SOCK_NO_BACKEND",
	"DROP_SNAT_NO_PORT", "DROP_NO_ROUTE", "DROP_SOURCE_RANGE", "DROP_SPOOFED",
}

// bpffsRoot is where the tests pin, each in a directory of its own.
const bpffsRoot = "/sys/fs/bpf"

// env is one freshly loaded fp_tc_lb with empty maps pinned in a private
// directory, so tests share nothing.
type env struct {
	t        testing.TB
	prog     *ebpf.Program
	metrics  *ebpf.Map
	services *bpfmap.Kernel[lbmap.ServiceKey, lbmap.ServiceValue]
	backends *bpfmap.Kernel[uint32, lbmap.Backend]
	revNat   *bpfmap.Kernel[uint32, lbmap.RevNat]
	ct       *bpfmap.Kernel[ctmap.Key, ctmap.Entry]
	affinity *bpfmap.Kernel[lbmap.AffinityKey, lbmap.AffinityValue]
	ranges   *bpfmap.Kernel[lbmap.SourceRangeKey, uint8]
	config   *ebpf.Map
	noMasq   *ebpf.Map
	// The verdict ring tc_lb writes its drops to, its settings, counters
	// and the endpoints map (bpf/include/drop.h).
	verdicts, policyConfig, policyMetrics, endpoints *ebpf.Map
	// ns, when set, is the network namespace runs happen in: its routes
	// and neighbours are what the program's FIB lookups see.
	ns *nettopo.NS
	// role is the instance's fp_iface_role (roleInternal unless
	// newEnvRole says otherwise).
	role uint32
}

func newEnv(t testing.TB) *env {
	t.Helper()
	return newEnvWith(t, nil)
}

// newEnvWith loads the object, after edit changes its spec when not nil.
func newEnvWith(t testing.TB, edit func(*ebpf.CollectionSpec)) *env {
	t.Helper()
	testpriv.Require(t)
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatalf("remove memlock rlimit: %v", err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(bpffsRoot, &st); err != nil || uint32(st.Type) != unix.BPF_FS_MAGIC {
		testpriv.Unavailable(t, "no bpffs at "+bpffsRoot+" (mount -t bpf bpf "+bpffsRoot+")")
	}
	dir, err := os.MkdirTemp(bpffsRoot, "fp-test-")
	if err != nil {
		t.Fatalf("pin directory: %v", err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove pin directory %s: %v", dir, err)
		}
	})

	var objs bpfobj.TclbObjects
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: dir}}
	if edit == nil {
		err = bpfobj.LoadTclbObjects(&objs, opts)
	} else {
		err = loadEdited(&objs, opts, edit)
	}
	if err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			t.Fatalf("load fp_tc_lb: %+v", verr)
		}
		t.Fatalf("load fp_tc_lb: %v", err)
	}
	t.Cleanup(func() { objs.Close() })

	return &env{
		t:        t,
		prog:     objs.FpTcLb,
		metrics:  objs.FpMetrics,
		services: bpfmap.NewKernel[lbmap.ServiceKey, lbmap.ServiceValue](objs.FpServices, "fp_services"),
		backends: bpfmap.NewKernel[uint32, lbmap.Backend](objs.FpBackends, "fp_backends"),
		revNat:   bpfmap.NewKernel[uint32, lbmap.RevNat](objs.FpRevNat, "fp_rev_nat"),
		ct:       bpfmap.NewKernel[ctmap.Key, ctmap.Entry](objs.FpCt, "fp_ct"),
		affinity: bpfmap.NewKernel[lbmap.AffinityKey, lbmap.AffinityValue](objs.FpAffinity, "fp_affinity"),
		ranges:   bpfmap.NewKernel[lbmap.SourceRangeKey, uint8](objs.FpSourceRanges, "fp_source_ranges"),
		config:   objs.FpConfig,
		noMasq:   objs.FpNoMasq,

		verdicts:      objs.FpVerdicts,
		policyConfig:  objs.FpPolicyConfig,
		policyMetrics: objs.FpPolicyMetrics,
		endpoints:     objs.FpEndpoints,
	}
}

func loadEdited(objs *bpfobj.TclbObjects, opts *ebpf.CollectionOptions, edit func(*ebpf.CollectionSpec)) error {
	spec, err := bpfobj.LoadTclb()
	if err != nil {
		return err
	}
	edit(spec)
	return spec.LoadAndAssign(objs, opts)
}

// run feeds one frame to the program and returns the verdict and the frame
// as the program left it.
func (e *env) run(frame []byte) (uint32, []byte) {
	e.t.Helper()
	out := make([]byte, len(frame)+256)
	opts := &ebpf.RunOptions{Data: frame, DataOut: out, Repeat: 1}
	var ret uint32
	var err error
	if e.ns == nil {
		ret, err = e.prog.Run(opts)
	} else {
		// A test run's packet comes from the caller's namespace's loopback.
		err = e.ns.Do(func() (err error) {
			ret, err = e.prog.Run(opts)
			return err
		})
	}
	if err != nil {
		e.t.Fatalf("run fp_tc_lb: %v", err)
	}
	return e.pass(ret), opts.DataOut
}

// pass maps the "passed on" verdict (TCX_NEXT, both roles: tc_policy may
// follow tc_lb on any interface) to actOK, TC_ACT_OK (which would end the
// chain) to actWrongPass.
func (e *env) pass(ret uint32) uint32 {
	switch ret {
	case actNext:
		return actOK
	case actOK:
		return actWrongPass
	}
	return ret
}

// mustRun runs frame and fails unless the verdict is want.
func (e *env) mustRun(frame []byte, want uint32) []byte {
	e.t.Helper()
	ret, out := e.run(frame)
	if ret != want {
		e.t.Fatalf("verdict %d, want %d\nin:  %x\nout: %x", ret, want, frame, out)
	}
	return out
}

// backend is one endpoint of a service in a test.
type backend struct {
	id   uint32
	addr netip.AddrPort
}

// setService writes a service's frontend, rev_nat entry, backends and slots
// (one slot per backend, in order). Slots beyond the new count are left
// alone, as a reconciler shrinking a service would leave them until later.
func (e *env) setService(vip netip.AddrPort, proto uint8, revNatID uint32, bes ...backend) {
	e.t.Helper()
	e.setServiceValue(vip, proto, lbmap.ServiceValue{RevNatID: revNatID}, bes...)
}

// setServiceValue is setService with the slot-0 entry's flags and affinity
// timeout taken from svc; its count is len(bes).
func (e *env) setServiceValue(vip netip.AddrPort, proto uint8, svc lbmap.ServiceValue, bes ...backend) {
	e.t.Helper()
	e.setServiceIn(lbmap.ScopeExternal, vip, proto, svc, bes...)
}

// setServiceIn is setServiceValue for the entry set of scope.
func (e *env) setServiceIn(scope uint8, vip netip.AddrPort, proto uint8, svc lbmap.ServiceValue, bes ...backend) {
	e.t.Helper()
	revNatID := svc.RevNatID
	svc.Count = uint16(len(bes))
	key := func(slot uint16) lbmap.ServiceKey {
		return lbmap.ServiceKey{Addr: lbmap.AddrFrom(vip.Addr()), Port: vip.Port(), Proto: proto, Scope: scope, Slot: slot}
	}
	keys := []lbmap.ServiceKey{key(0)}
	vals := []lbmap.ServiceValue{svc}
	var ids []uint32
	var backends []lbmap.Backend
	for i, b := range bes {
		keys = append(keys, key(uint16(i+1)))
		vals = append(vals, lbmap.ServiceValue{BackendID: b.id})
		ids = append(ids, b.id)
		backends = append(backends, lbmap.Backend{Addr: lbmap.AddrFrom(b.addr.Addr()), Port: b.addr.Port(), Proto: proto})
	}
	// Backends and rev_nat first: a slot never names a missing backend.
	if err := e.backends.Update(ids, backends); err != nil {
		e.t.Fatal(err)
	}
	rn := lbmap.RevNat{Addr: lbmap.AddrFrom(vip.Addr()), Port: vip.Port()}
	if err := e.revNat.Update([]uint32{revNatID}, []lbmap.RevNat{rn}); err != nil {
		e.t.Fatal(err)
	}
	if err := e.services.Update(keys, vals); err != nil {
		e.t.Fatal(err)
	}
}

// metricsNow returns fp_metrics summed over CPUs.
func (e *env) metricsNow() [metricMax]bpfobj.TclbFpMetric {
	e.t.Helper()
	var sum [metricMax]bpfobj.TclbFpMetric
	for i := range uint32(metricMax) {
		var per []bpfobj.TclbFpMetric
		if err := e.metrics.Lookup(&i, &per); err != nil {
			e.t.Fatalf("fp_metrics[%d]: %v", i, err)
		}
		for _, m := range per {
			sum[i].Packets += m.Packets
			sum[i].Bytes += m.Bytes
		}
	}
	return sum
}

// wantMetrics fails unless the packet counters are exactly want (indexes
// not in want must be 0).
func (e *env) wantMetrics(want map[int]uint64) {
	e.t.Helper()
	got := e.metricsNow()
	for i := range metricMax {
		if got[i].Packets != want[i] {
			e.t.Errorf("metric %s: %d packets, want %d", metricNames[i], got[i].Packets, want[i])
		}
	}
}

// ctEntry returns the ct entry of key, failing when it is absent.
func (e *env) ctEntry(key ctmap.Key) ctmap.Entry {
	e.t.Helper()
	v, ok, err := e.ct.Lookup(key)
	if err != nil {
		e.t.Fatal(err)
	}
	if !ok {
		all, _ := e.ct.All()
		e.t.Fatalf("no ct entry %v; map holds %v", key, all)
	}
	return v
}

// ctLen returns the number of ct entries.
func (e *env) ctLen() int {
	e.t.Helper()
	all, err := e.ct.All()
	if err != nil {
		e.t.Fatal(err)
	}
	return len(all)
}

func ctKey(f pkttest.Flow, proto, dir uint8) ctmap.Key {
	return ctmap.Key{
		SAddr: lbmap.AddrFrom(f.Src.Addr()), DAddr: lbmap.AddrFrom(f.Dst.Addr()),
		SPort: f.Src.Port(), DPort: f.Dst.Port(), Proto: proto, Dir: dir,
	}
}

// bootNow is CLOCK_BOOTTIME, the clock of ct expiry.
func bootNow(t *testing.T) uint64 {
	t.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		t.Fatal(err)
	}
	return uint64(ts.Nano())
}

// wantFrame fails unless got is byte-equal to want and has valid checksums.
func wantFrame(t *testing.T, got, want []byte) {
	t.Helper()
	if err := pkttest.VerifyChecksums(got); err != nil {
		t.Errorf("checksums: %v\nframe: %x", err, got)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("frame differs\ngot:  %x\nwant: %x", got, want)
	}
}

func addrPort(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

const second = uint64(time.Second)
