package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"slices"
	"time"

	"github.com/cilium/ebpf"

	"github.com/fastpath-net/fastpath/internal/datapath"
	"github.com/fastpath-net/fastpath/internal/datapath/bpfmap"
	"github.com/fastpath-net/fastpath/internal/datapath/lbmap"
	"github.com/fastpath-net/fastpath/internal/loadbalancer"
)

// opStats summarises the latencies of one kind of change.
type opStats struct {
	Name    string
	What    string
	Samples []time.Duration
}

func (o *opStats) quantile(q float64) time.Duration {
	if len(o.Samples) == 0 {
		return 0
	}
	s := slices.Clone(o.Samples)
	slices.Sort(s)
	return s[int(q*float64(len(s)-1)+0.5)]
}

func (o *opStats) mean() time.Duration {
	if len(o.Samples) == 0 {
		return 0
	}
	var sum time.Duration
	for _, d := range o.Samples {
		sum += d
	}
	return sum / time.Duration(len(o.Samples))
}

func (o *opStats) max() time.Duration {
	if len(o.Samples) == 0 {
		return 0
	}
	return slices.Max(o.Samples)
}

type updateResult struct {
	N             int
	UpsertAll     time.Duration // Table.Upsert of all N services
	InitialSync   time.Duration // first Reconciler.Sync of N services into empty maps
	Ops           []*opStats
	FrontendsLeft int // frontends in the map at the end, should be N
	// LiveHeap is the Go heap that the Table and Reconciler holding N
	// services keep alive (after a GC): the agent's steady state, without
	// the services file's parse.
	LiveHeap uint64
}

// benchUpdates loads the datapath on its own pin directory (no agent, no
// attachment), programs n services through a Table and a Reconciler into
// the real kernel maps, and times single changes against that state.
func benchUpdates(ctx context.Context, pinDir string, n, ops int, backends []netip.AddrPort) (*updateResult, error) {
	dp, table, rec, err := loadUnattached(pinDir)
	if err != nil {
		return nil, err
	}
	defer dp.Close()
	cur := make([]int, n) // index into backends of service i's backend
	res := &updateResult{N: n}
	heap0 := liveHeap()

	t0 := time.Now()
	for i := 0; i < n; i++ {
		cur[i] = i % len(backends)
		if err := table.Upsert(benchService(i, backends[cur[i]])); err != nil {
			return nil, err
		}
	}
	res.UpsertAll = time.Since(t0)
	t0 = time.Now()
	if err := rec.Sync(table); err != nil {
		return nil, fmt.Errorf("initial sync of %d services: %w", n, err)
	}
	res.InitialSync = time.Since(t0)
	if h := liveHeap(); h > heap0 {
		res.LiveHeap = h - heap0
	}
	runtime.KeepAlive(table)
	runtime.KeepAlive(rec)

	rng := rand.New(rand.NewPCG(1, 2))
	add := &opStats{Name: "reconciler add", What: "Table.Upsert of a new service + Reconciler.Sync (writes rev-NAT, slot 1, slot 0)"}
	upd := &opStats{Name: "reconciler update", What: "Table.Upsert moving a random service to another backend + Reconciler.Sync (writes slot 1)"}
	del := &opStats{Name: "reconciler delete", What: "Table.Delete of a service + Reconciler.Sync (deletes slot 0, slot 1, rev-NAT)"}
	// One change, applied and timed as the agent would apply it.
	timed := func(st *opStats, change func() error) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		t := time.Now()
		if err := change(); err != nil {
			return err
		}
		if err := rec.Sync(table); err != nil {
			return err
		}
		st.Samples = append(st.Samples, time.Since(t))
		return nil
	}
	for k := 0; k < ops; k++ {
		i := n + k
		if err := timed(add, func() error { return table.Upsert(benchService(i, backends[i%len(backends)])) }); err != nil {
			return nil, fmt.Errorf("add: %w", err)
		}
	}
	for k := 0; k < ops; k++ {
		i := rng.IntN(n)
		cur[i] = (cur[i] + 1) % len(backends)
		if err := timed(upd, func() error { return table.Upsert(benchService(i, backends[cur[i]])) }); err != nil {
			return nil, fmt.Errorf("update: %w", err)
		}
	}
	for k := 0; k < ops; k++ {
		i := n + k
		if err := timed(del, func() error { table.Delete(serviceName(i)); return nil }); err != nil {
			return nil, fmt.Errorf("delete: %w", err)
		}
	}

	raw, err := rawUpdates(ctx, dp, n, ops, rng)
	if err != nil {
		return nil, err
	}
	res.Ops = append([]*opStats{add, upd, del}, raw...)

	all, err := dp.LB.Services.All()
	if err != nil {
		return nil, err
	}
	for k := range all {
		if k.Slot == 0 {
			res.FrontendsLeft++
		}
	}
	return res, nil
}

// loadUnattached loads the datapath on its own pin directory, attached
// nowhere, with an empty Table and a Reconciler writing its maps.
func loadUnattached(pinDir string) (*datapath.Datapath, *loadbalancer.Table, *loadbalancer.Reconciler, error) {
	dp, err := datapath.Load(datapath.Config{PinDir: pinDir})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("load datapath: %w", err)
	}
	return dp, loadbalancer.NewTable(), loadbalancer.NewReconciler(dp.LB, loadbalancer.ReconcilerOptions{}), nil
}

// rawUpdates times single BPF syscalls on fp_services with n services in
// it, for comparison: rewriting an existing entry, inserting a new one and
// deleting it again.
func rawUpdates(ctx context.Context, dp *datapath.Datapath, n, ops int, rng *rand.Rand) ([]*opStats, error) {
	k, ok := dp.LB.Services.(*bpfmap.Kernel[lbmap.ServiceKey, lbmap.ServiceValue])
	if !ok {
		return nil, fmt.Errorf("services map is %T, not a kernel map", dp.LB.Services)
	}
	m := k.EbpfMap()
	upd := &opStats{Name: "raw map update", What: "one BPF_MAP_UPDATE_ELEM rewriting an existing fp_services entry"}
	ins := &opStats{Name: "raw map insert", What: "one BPF_MAP_UPDATE_ELEM adding a new fp_services entry"}
	del := &opStats{Name: "raw map delete", What: "one BPF_MAP_DELETE_ELEM of that entry"}
	for j := 0; j < ops; j++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		key := frontendKey(rng.IntN(n))
		var v lbmap.ServiceValue
		if err := m.Lookup(&key, &v); err != nil {
			return nil, fmt.Errorf("lookup %v: %w", key, err)
		}
		t := time.Now()
		if err := m.Update(&key, &v, ebpf.UpdateExist); err != nil {
			return nil, fmt.Errorf("raw update: %w", err)
		}
		upd.Samples = append(upd.Samples, time.Since(t))
	}
	for j := 0; j < ops; j++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		// Far above every service the benchmark uses; never attached.
		key := frontendKey(n + 2*ops + j)
		v := lbmap.ServiceValue{}
		t := time.Now()
		if err := m.Update(&key, &v, ebpf.UpdateNoExist); err != nil {
			return nil, fmt.Errorf("raw insert: %w", err)
		}
		ins.Samples = append(ins.Samples, time.Since(t))
		t = time.Now()
		if err := m.Delete(&key); err != nil {
			return nil, fmt.Errorf("raw delete: %w", err)
		}
		del.Samples = append(del.Samples, time.Since(t))
	}
	return []*opStats{upd, ins, del}, nil
}

// liveHeap is the heap in use after a full collection. (cur, sized N, is
// allocated before the first call, so it is not counted.)
func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func serviceName(i int) loadbalancer.ServiceName {
	return loadbalancer.ServiceName{Namespace: "bench", Name: fmt.Sprintf("svc-%d", i)}
}

// benchService is service i as the services file describes it.
func benchService(i int, be netip.AddrPort) loadbalancer.Service {
	return loadbalancer.Service{
		Name: serviceName(i),
		Frontends: []loadbalancer.FrontendSpec{{
			Frontend: loadbalancer.Frontend{
				L4Addr: loadbalancer.L4Addr{Addr: vipOf(i), Port: vipPort, Proto: loadbalancer.TCP},
				Scope:  loadbalancer.ScopeExternal,
				Type:   loadbalancer.ClusterIP,
			},
			Backends: []loadbalancer.Backend{{
				L4Addr: loadbalancer.L4Addr{Addr: be.Addr(), Port: be.Port(), Proto: loadbalancer.TCP},
				State:  loadbalancer.Active,
			}},
		}},
	}
}

func frontendKey(i int) lbmap.ServiceKey {
	return lbmap.ServiceKey{Addr: lbmap.AddrFrom(vipOf(i)), Port: vipPort, Proto: lbmap.ProtoTCP, Scope: lbmap.ScopeExternal}
}
