// Package datapath loads fastpath's BPF objects, pins their maps and links
// under one bpffs directory, and attaches the programs to interfaces.
//
// Pins make the datapath outlive the agent: a stopped agent leaves programs
// attached and maps filled, so traffic keeps flowing, and the next agent
// reopens the same maps and swaps in its programs atomically.
package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfmap"
	"github.com/fastpath-net/fastpath/internal/datapath/bpfobj"
	"github.com/fastpath-net/fastpath/internal/datapath/ctmap"
	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
	"github.com/fastpath-net/fastpath/internal/datapath/policymap"
	"github.com/fastpath-net/fastpath/internal/preflight"
)

// DefaultPinDir is where the agent and fastpathctl meet.
const DefaultPinDir = "/sys/fs/bpf/fastpath"

// Config says where to pin and how large the maps are.
type Config struct {
	PinDir     string     // bpffs directory; maps go to PinDir/maps, links to PinDir/links
	Sizes      Sizes      // zero fields take the defaults
	TC         TCMode     // how to attach TC programs
	Masquerade Masquerade // written to fp_config at every Load
	// Policy loads tc_policy (NetworkPolicy) and its maps; AttachPolicy
	// then attaches it to pod veths. With Policy or L7, tc_lb checks the
	// source of what pods send (sourceCheck).
	Policy bool
	// RecreateIncompatible unpins maps whose layout or size differs from
	// this build's, and pins of another layout version, so that they are
	// created anew (layout.go); false: Load refuses them.
	RecreateIncompatible bool
	// L7: the node runs the L7 proxy, so tc_policy also sends flows whose
	// destination pod's ingress has HTTP rules to it (docs/l7.md).
	L7 bool
}

// Masquerade is the node's source NAT: masqueraded flows (hairpin, and
// external traffic to services without externalTrafficPolicy: Local) get
// IP as their source and a port of their own from [PortMin, PortMax].
type Masquerade struct {
	IP netip.Addr // an IPv4 address of the node; invalid: no masquerading
	// The port range must lie outside the node's ephemeral ports
	// (net.ipv4.ip_local_port_range, 32768-60999 by default), which local
	// sockets use with the same address. Zero: DefaultSNATPorts.
	PortMin, PortMax uint16
	// ClusterCIDRs (--cluster-cidr): TCP and UDP flows from pods (internal
	// interfaces) with a source inside them to a destination outside them
	// are masqueraded too (bpf/include/egress.h). Empty: no such masquerade.
	ClusterCIDRs []netip.Prefix
}

// DefaultSNATPorts is the masquerade port range: above Linux's default
// ephemeral range, like Cilium's NodePort SNAT range.
var DefaultSNATPorts = [2]uint16{61000, 65535}

// IfaceRole is what an interface faces, fixed per program instance
// (FP_ROLE_* in bpf/include/fastpath.h). New flows from internal interfaces
// see a service's INTERNAL entry first; those from external interfaces only
// its EXTERNAL entry, and are masqueraded unless the service has
// externalTrafficPolicy: Local.
//
// The role is a load-time constant of two instances of tc_lb rather than a
// map from ifindex to role: the role then travels with the attachment and
// can never disagree with it (an ifindex reused by a new interface, a pinned
// link that outlives an agent which would rewrite the map, ifindexes of
// several namespaces sharing one map), a packet pays no lookup for it, and
// the verifier drops the other role's code. The price is a second load of
// the program.
type IfaceRole uint32

const (
	RoleInternal IfaceRole = 0 // pods and other clients inside the cluster
	RoleExternal IfaceRole = 1 // the node's uplinks
)

func (r IfaceRole) String() string {
	if r == RoleExternal {
		return "external"
	}
	return "internal"
}

// Sizes are the capacities of the maps, in entries.
type Sizes struct {
	Services   int // service entries: one per frontend plus one per backend slot
	Backends   int
	RevNat     int
	CT         int // two entries per load-balanced connection
	SockRevNat int
	Affinity   int // session affinity: one per client and frontend with ClientIP affinity
	// SourceRanges: loadBalancerSourceRanges prefixes, one per prefix and
	// LoadBalancer frontend (plus its ingress IPs when a range holds the node).
	SourceRanges int
}

// DefaultSizes fit a cluster of about 50,000 services with one or two
// backends each, and 128k concurrent load-balanced connections. Affinity is
// an LRU: when full, the clients idle longest lose their memory first.
var DefaultSizes = Sizes{Services: 262144, Backends: 131072, RevNat: 131072, CT: 262144, SockRevNat: 65536, Affinity: 65536, SourceRanges: 16384}

func (s Sizes) withDefaults() Sizes {
	pick := func(v, d int) int {
		if v > 0 {
			return v
		}
		return d
	}
	return Sizes{
		Services:   pick(s.Services, DefaultSizes.Services),
		Backends:   pick(s.Backends, DefaultSizes.Backends),
		RevNat:     pick(s.RevNat, DefaultSizes.RevNat),
		CT:         pick(s.CT, DefaultSizes.CT),
		SockRevNat: pick(s.SockRevNat, DefaultSizes.SockRevNat),
		Affinity:   pick(s.Affinity, DefaultSizes.Affinity),

		SourceRanges: pick(s.SourceRanges, DefaultSizes.SourceRanges),
	}
}

// Datapath is a loaded set of programs and the maps they share.
type Datapath struct {
	cfg   Config
	tc    bpfobj.TclbObjects // the internal-role instance, and the maps
	tcExt tcProgram          // the external-role instance
	sock  bpfobj.SocklbObjects

	policy *Policy // nil unless Config.Policy
	// recreated are the maps this Load created anew in place of pins of
	// another layout: empty until the agent programs them.
	recreated []string
	// carried are the maps this Load carried over from an older layout,
	// with the old maps held until FinishCarry.
	carried []*carrying

	LB      lbmap.Maps
	CT      bpfmap.Map[ctmap.Key, ctmap.Entry]
	Metrics *ebpf.Map
}

// Load loads both objects, creating the maps under cfg.PinDir/maps or
// reusing the ones already pinned there.
func Load(cfg Config) (_ *Datapath, err error) {
	if cfg.PinDir == "" {
		cfg.PinDir = DefaultPinDir
	}
	cfg.Sizes = cfg.Sizes.withDefaults()
	if err := preflight.CheckBPFFS(cfg.PinDir); err != nil {
		return nil, err
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("raise memlock limit: %w", err)
	}
	mapDir := filepath.Join(cfg.PinDir, "maps")
	if err := os.MkdirAll(mapDir, 0o700); err != nil {
		return nil, fmt.Errorf("pin dir %s: %w", mapDir, err)
	}
	mig := &migration{recreate: cfg.RecreateIncompatible}
	defer func() {
		if err != nil { // the new maps stay pinned; the old ones go
			(&Datapath{carried: mig.carried}).closeCarried()
		}
	}()
	if err := mig.checkVersion(mapDir); err != nil {
		return nil, err
	}
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: mapDir}}
	d := &Datapath{cfg: cfg}
	check := cfg.sourceCheck()
	if err := loadInto(tclbSpec(RoleInternal, check), &d.tc, cfg.Sizes, opts, mig); err != nil {
		return nil, fmt.Errorf("load tc_lb: %w", err)
	}
	if err := loadInto(tclbSpec(RoleExternal, check), &d.tcExt, cfg.Sizes, opts, mig); err != nil {
		d.tc.Close()
		return nil, fmt.Errorf("load tc_lb (external role): %w", err)
	}
	if err := loadInto(bpfobj.LoadSocklb, &d.sock, cfg.Sizes, opts, mig); err != nil {
		d.Close()
		return nil, fmt.Errorf("load sock_lb: %w", err)
	}
	if cfg.Policy {
		p, err := loadPolicy(opts, cfg.Sizes, mig, cfg.L7)
		if err != nil {
			d.Close()
			return nil, err
		}
		d.policy = p
	}
	if err := d.SetMasquerade(cfg.Masquerade); err != nil {
		d.Close()
		return nil, err
	}
	d.LB = lbmap.Maps{
		Services: bpfmap.NewKernel[lbmap.ServiceKey, lbmap.ServiceValue](d.tc.FpServices, "fp_services"),
		Backends: bpfmap.NewKernel[uint32, lbmap.Backend](d.tc.FpBackends, "fp_backends"),
		RevNat:   bpfmap.NewKernel[uint32, lbmap.RevNat](d.tc.FpRevNat, "fp_rev_nat"),

		SourceRanges: bpfmap.NewKernel[lbmap.SourceRangeKey, uint8](d.tc.FpSourceRanges, "fp_source_ranges"),
	}
	d.CT = bpfmap.NewKernel[ctmap.Key, ctmap.Entry](d.tc.FpCt, "fp_ct")
	d.Metrics = d.tc.FpMetrics
	d.recreated = mig.dropped
	if err := writeLayout(mapDir, MapLayoutVersion); err != nil {
		d.Close()
		return nil, err
	}
	d.carried = mig.carried
	return d, nil
}

// Recreated names the maps Load created anew in place of pins of another
// layout (Config.RecreateIncompatible). They are empty: attach the
// programs only once they are programmed, and the old programs serve
// meanwhile.
func (d *Datapath) Recreated() []string { return d.recreated }

// tcProgram is one instance of the TC program; its maps are the pinned ones.
type tcProgram struct {
	Prog *ebpf.Program `ebpf:"fp_tc_lb"`
}

// sourceCheck says whether tc_lb checks the source address of what pods
// send (fp_source_check in bpf/tc_lb.c): with NetworkPolicy, whose
// identities are source addresses and whose side of the agent writes each
// pod's address, and always with the L7 proxy, whose accept_local on pod
// veths would let a pod send as the node. Without policy no address is
// written, so the check could never fire: it is compiled out instead.
func (c Config) sourceCheck() bool { return c.Policy || c.L7 }

// tclbSpec returns a loader of tc_lb's spec with the interface role and
// the source check set.
func tclbSpec(role IfaceRole, sourceCheck bool) func() (*ebpf.CollectionSpec, error) {
	return func() (*ebpf.CollectionSpec, error) {
		cs, err := bpfobj.LoadTclb()
		if err != nil {
			return nil, err
		}
		if err := cs.Variables[bpfobj.TclbVarFpIfaceRole].Set(uint32(role)); err != nil {
			return nil, fmt.Errorf("set interface role: %w", err)
		}
		check := uint32(0)
		if sourceCheck {
			check = 1
		}
		if err := cs.Variables[bpfobj.TclbVarFpSourceCheck].Set(check); err != nil {
			return nil, fmt.Errorf("set source check: %w", err)
		}
		return cs, nil
	}
}

func loadInto(spec func() (*ebpf.CollectionSpec, error), objs any, sizes Sizes, opts *ebpf.CollectionOptions, mig *migration) error {
	cs, err := spec()
	if err != nil {
		return err
	}
	setSizes(cs, sizes)
	if err := mig.prepare(cs, opts.Maps.PinPath); err != nil {
		return err
	}
	err = cs.LoadAndAssign(objs, opts)
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		return fmt.Errorf("%w (a pinned map under %s has another layout or size than this agent wants: "+
			"start with the sizes it was created with, or remove the pins with `fastpathctl uninstall`)",
			err, opts.Maps.PinPath)
	}
	var verr *ebpf.VerifierError
	if errors.As(err, &verr) {
		return fmt.Errorf("verifier rejected a program: %+v", verr)
	}
	return err
}

func setSizes(cs *ebpf.CollectionSpec, s Sizes) {
	for name, n := range map[string]int{
		"fp_services":    s.Services,
		"fp_backends":    s.Backends,
		"fp_rev_nat":     s.RevNat,
		"fp_ct":          s.CT,
		"fp_sock_revnat": s.SockRevNat,
		"fp_affinity":    s.Affinity,

		"fp_source_ranges": s.SourceRanges,
	} {
		if m, ok := cs.Maps[name]; ok {
			m.MaxEntries = uint32(n)
		}
	}
}

// Close releases this process's handles. Pinned maps and links stay, and so
// does the datapath they make up.
func (d *Datapath) Close() error {
	var ext error
	if d.tcExt.Prog != nil {
		ext = d.tcExt.Prog.Close()
	}
	d.closeCarried()
	return errors.Join(d.tc.Close(), ext, d.sock.Close(), d.policy.Close())
}

// SetMasquerade writes the node's source-NAT settings to fp_config. New
// flows use them at once; established ones keep the address they got.
func (d *Datapath) SetMasquerade(m Masquerade) error {
	v, err := m.config()
	if err != nil {
		return err
	}
	// The CIDRs before the flag: the datapath never masquerades with a
	// half-written list.
	if err := d.setClusterCIDRs(m.ClusterCIDRs); err != nil {
		return err
	}
	if err := d.tc.FpConfig.Update(uint32(0), &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("write fp_config: %w", err)
	}
	return nil
}

// setClusterCIDRs makes fp_no_masq's cluster entries exactly cidrs; entries
// of other kinds (node addresses, written by internal/routing) stay.
func (d *Datapath) setClusterCIDRs(cidrs []netip.Prefix) error {
	m := NoMasqMap(d.tc.FpNoMasq)
	want := map[lbmap.CIDRKey]uint8{}
	for _, p := range cidrs {
		if !p.Addr().Is4() {
			return fmt.Errorf("cluster CIDR %s: only IPv4 is supported", p)
		}
		want[lbmap.CIDRKeyFrom(p)] = lbmap.NoMasqCluster
	}
	return SyncNoMasq(m, lbmap.NoMasqCluster, want)
}

// NoMasqMap is typed access to fp_no_masq.
func NoMasqMap(m *ebpf.Map) bpfmap.Map[lbmap.CIDRKey, uint8] {
	return bpfmap.NewKernel[lbmap.CIDRKey, uint8](m, "fp_no_masq")
}

// SyncNoMasq makes the entries of fp_no_masq of one kind exactly want (all
// of that kind), leaving the other kind's entries alone.
func SyncNoMasq(m bpfmap.Map[lbmap.CIDRKey, uint8], kind uint8, want map[lbmap.CIDRKey]uint8) error {
	return bpfmap.Sync(m, want, func(_ lbmap.CIDRKey, v uint8) bool { return v == kind })
}

// config validates m and returns it as fp_config's entry.
func (m Masquerade) config() (lbmap.Config, error) {
	if m.PortMin == 0 && m.PortMax == 0 {
		m.PortMin, m.PortMax = DefaultSNATPorts[0], DefaultSNATPorts[1]
	}
	if m.PortMin == 0 || m.PortMin > m.PortMax {
		return lbmap.Config{}, fmt.Errorf("masquerade ports %d-%d: want 1 <= min <= max", m.PortMin, m.PortMax)
	}
	v := lbmap.Config{SnatPortMin: m.PortMin, SnatPortMax: m.PortMax}
	if m.IP.IsValid() {
		if !m.IP.Unmap().Is4() {
			return lbmap.Config{}, fmt.Errorf("masquerade address %s: only IPv4 is supported", m.IP)
		}
		v.MasqAddr = lbmap.AddrFrom(m.IP.Unmap())
	}
	if len(m.ClusterCIDRs) > 0 {
		v.Flags |= lbmap.ConfigEgressMasq
	}
	return v, nil
}

// PinDir is the bpffs directory of this datapath.
func (d *Datapath) PinDir() string { return d.cfg.PinDir }

// TCProgram is the per-packet load balancer for internal interfaces.
func (d *Datapath) TCProgram() *ebpf.Program { return d.tc.FpTcLb }

// TCProgramFor is the per-packet load balancer for interfaces of role.
func (d *Datapath) TCProgramFor(role IfaceRole) *ebpf.Program {
	if role == RoleExternal {
		return d.tcExt.Prog
	}
	return d.tc.FpTcLb
}

// SockObjects are the socket-LB programs, for attaching to a cgroup.
func (d *Datapath) SockObjects() *bpfobj.SocklbObjects { return &d.sock }

// Uninstall removes every pin under pinDir. Unpinning a TCX or cgroup link
// detaches its program once no process holds it; clsact filters must be
// removed with DetachTC, per interface.
func Uninstall(pinDir string) error {
	if !isBPFFS(pinDir) {
		if _, err := os.Stat(pinDir); errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("uninstall %s: not a bpffs directory, refusing to remove it", pinDir)
	}
	return os.RemoveAll(pinDir)
}

// Verdicts is the verdict ring (fp_verdicts), written by tc_lb and
// tc_policy alike: tc_lb's object holds it whether policy is on or not.
func (d *Datapath) Verdicts() *ebpf.Map { return d.tc.FpVerdicts }

// VerdictCounters is fp_policy_metrics: per-CPU counts of records not
// written (policymap.MetricRingLost, MetricRateLimited) and policy drops.
func (d *Datapath) VerdictCounters() *ebpf.Map { return d.tc.FpPolicyMetrics }

// VerdictConfig is fp_policy_config: allow sampling and the per-CPU
// budget of drop records, for tc_lb's and tc_policy's records.
func (d *Datapath) VerdictConfig() bpfmap.Map[uint32, policymap.PolicyConfig] {
	return bpfmap.NewKernel[uint32, policymap.PolicyConfig](d.tc.FpPolicyConfig, "fp_policy_config")
}
