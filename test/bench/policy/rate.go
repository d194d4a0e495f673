package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfmap"
	"github.com/fastpath-net/fastpath/internal/datapath/policymap"
	"github.com/fastpath-net/fastpath/internal/identity"
	"github.com/fastpath-net/fastpath/internal/lab"
	"github.com/fastpath-net/fastpath/internal/nettopo"
	"github.com/fastpath-net/fastpath/test/bench/internal/procstat"
	"github.com/fastpath-net/fastpath/test/internal/nsproc"
)

// The connection-rate experiment: one target web pod, selected by 1
// policy or by 1 + (cfg.Policies-1) policies, toggled by one label on the
// pod (pb-rate=on: the extra policies select it), measured alternately in
// the same run by the same generator: cfg.RateWorkers threads in the
// client pod, each connecting, and resetting at once, in a loop. Every
// connection's SYN is a policy lookup in tc_policy on the target's veth
// (later packets of a connection hit conntrack).
//
// The generator's own ceiling is measured the same way against a server
// on 127.0.0.1 inside the client pod (no veth, no BPF): if the pod-to-pod
// rate is well below it, the generator is not what limits it.

// rateRow is one window.
type rateRow struct {
	Target   string // "loopback (generator ceiling)" or "web pod, N policies select it"
	Policies int    // policies selecting the target; 0 for the ceiling
	Rep      int
	Conns    int
	Failed   int
	Window   time.Duration
	GenCores float64 // CPU of this process (the generator) / wall time
	Entries  int     // fp_policy entries of the target's endpoint
	Load     string
}

func (r rateRow) Rate() float64 { return float64(r.Conns) / r.Window.Seconds() }

const ratePort = portB

func (b *bench) rateSeries(ctx context.Context) ([]rateRow, error) {
	// The changes left the web pods isolated by the pb-zone policies;
	// pb-rate-base alone now lets the client in.
	// It enforces egress too (allowing all): the extra policies include
	// egress ones, and the comparison is of the number of policies, not
	// of the directions enforced.
	base := webPolicy("pb-rate-base", fromClient, ratePort)
	base.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
	base.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{}}
	if _, err := b.createPolicy(ctx, base); err != nil {
		return nil, err
	}
	for _, name := range []string{"pb-zone-a", "pb-zone-b"} {
		if _, err := b.deletePolicy(ctx, name); err != nil {
			return nil, err
		}
	}
	extra := b.cfg.Policies - 1
	logf(b.cfg, "rate: creating %d more policies that select a pod labelled pb-rate=on", extra)
	if err := parallel(ctx, extra, func(k int) error {
		_, err := b.createPolicy(ctx, ratePolicy(k, extra, b.cfg.Namespaces))
		return err
	}); err != nil {
		return nil, err
	}
	target := b.rateTarget
	dst := netip.AddrPortFrom(target, ratePort)
	if _, _, err := waitOpen(ctx, b.open[b.rateIdx], dst, b.cfg.ChangeLimit); err != nil {
		return nil, err
	}

	client, err := nettopo.OpenNS(lab.PodNS("client"))
	if err != nil {
		return nil, err
	}
	defer client.Release()
	loop := netip.MustParseAddrPort("127.0.0.1:18080")
	w, err := nettopo.StartWhoami(client, "loopback", loop.String())
	if err != nil {
		return nil, err
	}
	defer w.Close()
	gen, err := newGenerator(client, b.cfg.RateWorkers)
	if err != nil {
		return nil, err
	}
	defer gen.close()

	var rows []rateRow
	window := func(name string, policies, rep int, addr netip.AddrPort) error {
		r, err := gen.run(ctx, addr, b.cfg.RateWindow)
		if err != nil {
			return err
		}
		r.Target, r.Policies, r.Rep = name, policies, rep
		rows = append(rows, r)
		logf(b.cfg, "rate: %-40s rep %d: %8.0f conn/s (%d failed), generator %.2f cores", name, rep, r.Rate(), r.Failed, r.GenCores)
		return nil
	}
	if err := window("loopback in the client pod (ceiling)", 0, 1, loop); err != nil {
		return rows, err
	}
	for rep := 1; rep <= b.cfg.RateReps; rep++ {
		for _, on := range []bool{false, true} {
			if err := b.selectRateTarget(ctx, on); err != nil {
				return rows, err
			}
			entries, err := b.targetEntries()
			if err != nil {
				return rows, err
			}
			n := 1
			if on {
				n += extra
			}
			if err := window(fmt.Sprintf("web pod selected by %d policies", n), n, rep, dst); err != nil {
				return rows, err
			}
			rows[len(rows)-1].Entries = entries
		}
	}
	return rows, nil
}

// ratePolicy is extra policy k: a bulk policy's rules moved to the lab
// namespace and selecting the pb-rate=on pod. The last one also lets the
// client in on portA, the marker selectRateTarget waits for.
func ratePolicy(k, n, namespaces int) *networkingv1.NetworkPolicy {
	np := bulkPolicy(k, namespaces)
	np.Namespace, np.Name = lab.Namespace, fmt.Sprintf("pb-rate-%d", k)
	np.Spec.PodSelector = *sel("pb-rate", "on")
	if k == n-1 {
		np.Spec.PolicyTypes = nil
		np.Spec.Egress = nil
		np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{fromClient}, Ports: []networkingv1.NetworkPolicyPort{tcp(portA)}}}
	}
	return np
}

// selectRateTarget labels the target pod pb-rate=on (or removes the
// label) and waits until its node enforces that: the marker port opens
// (or closes). An endpoint's policy is written in one go, so the marker
// means all of it is there.
func (b *bench) selectRateTarget(ctx context.Context, on bool) error {
	v := "null"
	if on {
		v = `"on"`
	}
	if _, err := b.patchPod(ctx, lab.Namespace, b.rateName, `{"metadata":{"labels":{"pb-rate":`+v+`}}}`); err != nil {
		return err
	}
	marker := netip.AddrPortFrom(b.rateTarget, portA)
	var err error
	if on {
		_, _, err = waitOpen(ctx, b.open[b.rateIdx], marker, b.cfg.ChangeLimit)
	} else {
		_, err = waitDenied(ctx, b.deny[b.rateIdx], marker, b.cfg.ChangeLimit)
	}
	if err != nil {
		return fmt.Errorf("pb-rate=%v on %s: %w", on, b.rateName, err)
	}
	// The pod's own policy follows its labels at once; its new identity
	// (and with it its fp_endpoints record) once allocated.
	if err := b.waitIdentified(ctx, b.rateTarget); err != nil {
		return err
	}
	return sleep(ctx, 500*time.Millisecond) // let the label's writes settle
}

// waitIdentified waits until the rate target's node judges ip by a
// cluster identity.
func (b *bench) waitIdentified(ctx context.Context, ip netip.Addr) error {
	deadline := time.Now().Add(b.cfg.ChangeLimit)
	for {
		id, err := b.caches[b.rateIdx].identity(ip)
		if err != nil {
			return err
		}
		if id >= identity.MinCluster && id <= identity.MaxCluster {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s has no cluster identity on its node after %s", ip, b.cfg.ChangeLimit)
		}
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return err
		}
	}
}

// generator is the connection loop's threads in the client pod.
type generator struct{ threads []*prober }

func newGenerator(ns *nettopo.NS, workers int) (*generator, error) {
	g := &generator{}
	for range workers {
		p, err := nsproc.NewThread(ns)
		if err != nil {
			g.close()
			return nil, err
		}
		g.threads = append(g.threads, p)
	}
	return g, nil
}

func (g *generator) close() {
	for _, p := range g.threads {
		p.Close()
	}
}

// run connects to addr from every thread for d and counts.
func (g *generator) run(ctx context.Context, addr netip.AddrPort, d time.Duration) (rateRow, error) {
	r := rateRow{Load: procstat.LoadAvg()}
	c0, err := procstat.CPU(os.Getpid())
	if err != nil {
		return r, err
	}
	var conns, failed atomic.Int64
	start := time.Now()
	end := start.Add(d)
	var wg sync.WaitGroup
	for _, p := range g.threads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.Do(func() {
				for time.Now().Before(end) && ctx.Err() == nil {
					if dial(addr, time.Second) == nil {
						conns.Add(1)
					} else {
						failed.Add(1)
					}
				}
			})
		}()
	}
	wg.Wait()
	r.Window = time.Since(start)
	c1, err := procstat.CPU(os.Getpid())
	if err != nil {
		return r, err
	}
	r.Conns, r.Failed = int(conns.Load()), int(failed.Load())
	r.GenCores = c1.Sub(c0).Self.Seconds() / r.Window.Seconds()
	return r, ctx.Err()
}

// targetEntries counts the fp_policy entries of the rate target's
// endpoint on its node (found by its identity in fp_endpoints).
func (b *bench) targetEntries() (int, error) {
	dir := filepath.Join(lab.NodePinDir(b.rateIdx+1), "maps")
	load := func(name string) (*ebpf.Map, error) {
		return ebpf.LoadPinnedMap(filepath.Join(dir, name), &ebpf.LoadPinOptions{ReadOnly: true})
	}
	id, err := b.caches[b.rateIdx].identity(b.rateTarget)
	if err != nil {
		return 0, err
	}
	em, err := load(policymap.EndpointsMap)
	if err != nil {
		return 0, err
	}
	defer em.Close()
	eps, err := bpfmap.NewKernel[uint32, policymap.Endpoint](em, policymap.EndpointsMap).All()
	if err != nil {
		return 0, err
	}
	epID, found := uint16(0), false
	for _, e := range eps {
		if identity.ID(e.Identity) == id {
			epID, found = e.ID, true
			break
		}
	}
	if !found {
		return 0, fmt.Errorf("no endpoint of identity %d in %s", id, dir)
	}
	pm, err := load(policymap.PolicyMap)
	if err != nil {
		return 0, err
	}
	defer pm.Close()
	n := 0
	err = bpfmap.NewKernel[policymap.PolicyKey, policymap.PolicyValue](pm, policymap.PolicyMap).Range(func(k policymap.PolicyKey, _ policymap.PolicyValue) bool {
		if k.Endpoint == epID {
			n++
		}
		return true
	})
	return n, err
}
