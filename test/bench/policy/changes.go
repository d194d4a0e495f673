package main

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/fastpath-net/fastpath/internal/identity"
	"github.com/fastpath-net/fastpath/internal/lab"
)

// The two ports of every web pod (fastpath-lab serve): the changes move
// what is allowed between them, so each change makes one port reachable
// (seen at the first connection that gets through) and, mostly, the
// other unreachable.
const (
	portA = 8000
	portB = 8080
)

// series is the latencies of one kind of change.
type series struct {
	Kind string
	How  string // how the change was seen on the nodes
	// Open: from the apiserver's answer until a connection to the newly
	// allowed port succeeded on every target; Close: until connections
	// to the newly denied port were dropped on every target.
	Open, Close []time.Duration
	Early       int // seen before the answer arrived (counted as 0)
	Timeouts    int // not seen within cfg.ChangeLimit
	Probes      int
}

// change is what one change did: the port it allowed and the one it
// denied (0: none) and when the apiserver answered the write.
type change struct {
	open, closed int
	accepted     time.Time
}

// packetSeries makes n changes with apply and times each on every target
// (one web pod per node, probed from the client pod) with real
// connections. Before each change it requires the port the change opens
// to be denied and the one it closes to be allowed, so every change is a
// real transition.
func (b *bench) packetSeries(ctx context.Context, kind string, n int, apply func(k int) (change, error)) (*series, error) {
	s := &series{Kind: kind, How: "TCP connections from the client pod to a web pod on each node"}
	for k := 0; k < n; k++ {
		open, closed := plan(kind, k)
		if err := b.require(ctx, open, closed); err != nil {
			return s, fmt.Errorf("%s #%d: before the change: %w", kind, k, err)
		}
		c, err := apply(k)
		if err != nil {
			return s, fmt.Errorf("%s #%d: %w", kind, k, err)
		}
		if c.open != open || c.closed != closed {
			return s, fmt.Errorf("%s #%d: planned %d/%d, made %d/%d", kind, k, open, closed, c.open, c.closed)
		}
		seenOpen, seenClosed, probes, err := b.observe(ctx, c)
		s.Probes += probes
		if err != nil {
			if ctx.Err() != nil {
				return s, ctx.Err()
			}
			// Not seen in time: reported, and the next change's
			// precondition waits for this one to land.
			logf(b.cfg, "%s #%d: %v", kind, k, err)
			s.Timeouts++
			continue
		}
		if !seenOpen.IsZero() {
			s.Open = append(s.Open, s.latency(seenOpen, c.accepted))
		}
		if !seenClosed.IsZero() {
			s.Close = append(s.Close, s.latency(seenClosed, c.accepted))
		}
		if err := sleep(ctx, b.cfg.Gap); err != nil {
			return s, err
		}
	}
	return s, nil
}

func (s *series) latency(seen, accepted time.Time) time.Duration {
	d := seen.Sub(accepted)
	if d < 0 {
		s.Early++
		return 0
	}
	return d
}

// plan is the ports change k of a kind opens and closes: toggles between
// A and B; an add opens B, a delete closes it.
func plan(kind string, k int) (open, closed int) {
	switch kind {
	case kindPolicyAdd:
		return portB, 0
	case kindPolicyDelete:
		return 0, portB
	}
	if k%2 == 0 {
		return portB, portA
	}
	return portA, portB
}

// require waits until port open is denied and port closed allowed on
// every target.
func (b *bench) require(ctx context.Context, open, closed int) error {
	return b.eachTarget(func(t int) error {
		if open != 0 {
			if _, err := waitDenied(ctx, b.deny[t], netip.AddrPortFrom(b.targets[t], uint16(open)), b.cfg.ChangeLimit); err != nil {
				return err
			}
		}
		if closed != 0 {
			if _, _, err := waitOpen(ctx, b.open[t], netip.AddrPortFrom(b.targets[t], uint16(closed)), b.cfg.ChangeLimit); err != nil {
				return err
			}
		}
		return nil
	})
}

// observe waits, on every target at once, for c's open port to let
// connections in and its closed port to drop them, and returns the
// latest time each was first seen.
func (b *bench) observe(ctx context.Context, c change) (open, closed time.Time, probes int, err error) {
	var mu sync.Mutex
	later := func(t *time.Time, seen time.Time) {
		mu.Lock()
		if seen.After(*t) {
			*t = seen
		}
		mu.Unlock()
	}
	err = b.eachTarget(func(t int) error {
		var wg sync.WaitGroup
		var oerr, cerr error
		if c.open != 0 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				seen, n, err := waitOpen(ctx, b.open[t], netip.AddrPortFrom(b.targets[t], uint16(c.open)), b.cfg.ChangeLimit)
				mu.Lock()
				probes += n
				mu.Unlock()
				oerr = err
				later(&open, seen)
			}()
		}
		if c.closed != 0 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				seen, err := waitDenied(ctx, b.deny[t], netip.AddrPortFrom(b.targets[t], uint16(c.closed)), b.cfg.ChangeLimit)
				cerr = err
				later(&closed, seen)
			}()
		}
		wg.Wait()
		if oerr != nil {
			return oerr
		}
		return cerr
	})
	return open, closed, probes, err
}

// eachTarget runs fn for every target at once.
func (b *bench) eachTarget(fn func(t int) error) error {
	errs := make([]error, len(b.targets))
	var wg sync.WaitGroup
	for t := range b.targets {
		wg.Add(1)
		go func() { defer wg.Done(); errs[t] = fn(t) }()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// The kinds of change, in the order they run.
const (
	kindPolicyAdd    = "policy add"
	kindPolicyDelete = "policy delete"
	kindPolicyUpdate = "policy update (port)"
	kindPodLabel     = "pod label"
	kindNSLabel      = "namespace label"
	kindBulkLabel    = "pod label, bulk pod"
)

// webPolicy selects the web pods and lets peer in on port.
func webPolicy(name string, peer networkingv1.NetworkPolicyPeer, port int) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: lab.Namespace, Name: name},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: *sel("app", "web"),
			Ingress:     []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{peer}, Ports: []networkingv1.NetworkPolicyPort{tcp(port)}}},
		},
	}
}

var fromClient = networkingv1.NetworkPolicyPeer{PodSelector: sel("app", "client")}

func (b *bench) createPolicy(ctx context.Context, np *networkingv1.NetworkPolicy) (time.Time, error) {
	_, err := b.cs.NetworkingV1().NetworkPolicies(np.Namespace).Create(ctx, np, metav1.CreateOptions{})
	return time.Now(), err
}

func (b *bench) deletePolicy(ctx context.Context, name string) (time.Time, error) {
	err := b.cs.NetworkingV1().NetworkPolicies(lab.Namespace).Delete(ctx, name, metav1.DeleteOptions{})
	return time.Now(), err
}

func (b *bench) patchPod(ctx context.Context, ns, name, patch string) (time.Time, error) {
	_, err := b.cs.CoreV1().Pods(ns).Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	return time.Now(), err
}

func (b *bench) patchNamespace(ctx context.Context, name, patch string) (time.Time, error) {
	_, err := b.cs.CoreV1().Namespaces().Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	return time.Now(), err
}

// changeSeries runs every kind of change, cfg.Changes of each. Each phase
// first puts its own policies on the web pods, then removes the previous
// phase's, so the web pods stay isolated throughout.
func (b *bench) changeSeries(ctx context.Context) ([]*series, error) {
	var out []*series
	n := b.cfg.Changes
	run := func(kind string, apply func(k int) (change, error)) error {
		logf(b.cfg, "changes: %d x %s", n, kind)
		s, err := b.packetSeries(ctx, kind, n, apply)
		out = append(out, s)
		return err
	}

	// Policies: pb-base lets the client in on A; pb-add (B) is created and
	// deleted in turn; then pb-base's port is moved between A and B.
	if _, err := b.createPolicy(ctx, webPolicy("pb-base", fromClient, portA)); err != nil {
		return out, err
	}
	adds := &series{Kind: kindPolicyAdd}
	dels := &series{Kind: kindPolicyDelete}
	logf(b.cfg, "changes: %d x %s and %s", n, kindPolicyAdd, kindPolicyDelete)
	for k := 0; k < n; k++ {
		s, err := b.packetSeries(ctx, kindPolicyAdd, 1, func(int) (change, error) {
			at, err := b.createPolicy(ctx, webPolicy("pb-add", fromClient, portB))
			return change{open: portB, accepted: at}, err
		})
		merge(adds, s)
		if err != nil {
			return append(out, adds, dels), err
		}
		s, err = b.packetSeries(ctx, kindPolicyDelete, 1, func(int) (change, error) {
			at, err := b.deletePolicy(ctx, "pb-add")
			return change{closed: portB, accepted: at}, err
		})
		merge(dels, s)
		if err != nil {
			return append(out, adds, dels), err
		}
	}
	out = append(out, adds, dels)
	if err := run(kindPolicyUpdate, func(k int) (change, error) {
		open, closed := plan(kindPolicyUpdate, k)
		patch := fmt.Sprintf(`{"spec":{"ingress":[{"from":[{"podSelector":{"matchLabels":{"app":"client"}}}],"ports":[{"protocol":"TCP","port":%d}]}]}}`, open)
		_, err := b.cs.NetworkingV1().NetworkPolicies(lab.Namespace).Patch(ctx, "pb-base", types.MergePatchType, []byte(patch), metav1.PatchOptions{})
		return change{open: open, closed: closed, accepted: time.Now()}, err
	}); err != nil {
		return out, err
	}

	// Pod labels: role=a lets the client in on A, role=b on B.
	for _, np := range []*networkingv1.NetworkPolicy{
		webPolicy("pb-role-a", networkingv1.NetworkPolicyPeer{PodSelector: sel("pb-role", "a")}, portA),
		webPolicy("pb-role-b", networkingv1.NetworkPolicyPeer{PodSelector: sel("pb-role", "b")}, portB),
	} {
		if _, err := b.createPolicy(ctx, np); err != nil {
			return out, err
		}
	}
	if _, err := b.patchPod(ctx, lab.Namespace, "client", `{"metadata":{"labels":{"pb-role":"a"}}}`); err != nil {
		return out, err
	}
	if _, err := b.deletePolicy(ctx, "pb-base"); err != nil {
		return out, err
	}
	if err := run(kindPodLabel, func(k int) (change, error) {
		open, closed := plan(kindPodLabel, k)
		role := map[int]string{portA: "a", portB: "b"}[open]
		at, err := b.patchPod(ctx, lab.Namespace, "client", fmt.Sprintf(`{"metadata":{"labels":{"pb-role":%q}}}`, role))
		return change{open: open, closed: closed, accepted: at}, err
	}); err != nil {
		return out, err
	}

	// Namespace labels: the lab namespace with pb-zone=a lets its pods in
	// on A, with pb-zone=b on B. It holds the client, the web pods and a
	// tenth of the bulk pods: all of them change identity.
	for _, np := range []*networkingv1.NetworkPolicy{
		webPolicy("pb-zone-a", networkingv1.NetworkPolicyPeer{NamespaceSelector: sel("pb-zone", "a")}, portA),
		webPolicy("pb-zone-b", networkingv1.NetworkPolicyPeer{NamespaceSelector: sel("pb-zone", "b")}, portB),
	} {
		if _, err := b.createPolicy(ctx, np); err != nil {
			return out, err
		}
	}
	if _, err := b.patchNamespace(ctx, lab.Namespace, `{"metadata":{"labels":{"pb-zone":"a"}}}`); err != nil {
		return out, err
	}
	if _, err := b.patchPod(ctx, lab.Namespace, "client", `{"metadata":{"labels":{"pb-role":null}}}`); err != nil {
		return out, err
	}
	for _, name := range []string{"pb-role-a", "pb-role-b"} {
		if _, err := b.deletePolicy(ctx, name); err != nil {
			return out, err
		}
	}
	if err := run(kindNSLabel, func(k int) (change, error) {
		open, closed := plan(kindNSLabel, k)
		zone := map[int]string{portA: "a", portB: "b"}[open]
		at, err := b.patchNamespace(ctx, lab.Namespace, fmt.Sprintf(`{"metadata":{"labels":{"pb-zone":%q}}}`, zone))
		return change{open: open, closed: closed, accepted: at}, err
	}); err != nil {
		return out, err
	}

	logf(b.cfg, "changes: %d x %s", n, kindBulkLabel)
	s, err := b.bulkLabelSeries(ctx, n)
	return append(out, s), err
}

func merge(into, s *series) {
	if s == nil {
		return
	}
	into.How = s.How
	into.Open = append(into.Open, s.Open...)
	into.Close = append(into.Close, s.Close...)
	into.Early += s.Early
	into.Timeouts += s.Timeouts
	into.Probes += s.Probes
}

// bulkLabelSeries flips the version label of bulk pods (a different pod
// each time, on every node in turn) and times until every node's pinned
// ipcache judges the pod's address by a new cluster identity: the path
// of a label change of a pod without real packets.
func (b *bench) bulkLabelSeries(ctx context.Context, n int) (*series, error) {
	s := &series{Kind: kindBulkLabel, How: "every node's pinned fp_ipcache entry of the pod's address (polled every 1 ms)"}
	pods := b.cfg.bulkPods()
	if pods == 0 {
		return s, nil
	}
	for k := 0; k < n; k++ {
		j := (k * 37) % pods
		p := bulkPod(j, b.cfg.Namespaces, b.cfg.Nodes)
		ip := bulkPodIP(j)
		cur, err := b.cs.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
		if err != nil {
			return s, err
		}
		old := make([]identity.ID, len(b.caches))
		for i, c := range b.caches {
			if old[i], err = c.identity(ip); err != nil {
				return s, err
			}
		}
		next := map[string]string{"v1": "v2", "v2": "v1"}[cur.Labels[labelVersion]]
		at, err := b.patchPod(ctx, p.Namespace, p.Name, fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, labelVersion, next))
		if err != nil {
			return s, err
		}
		seen, probes, err := b.waitIdentityChange(ctx, ip, old)
		s.Probes += probes
		if err != nil {
			if ctx.Err() != nil {
				return s, ctx.Err()
			}
			logf(b.cfg, "%s #%d (%s/%s): %v", kindBulkLabel, k, p.Namespace, p.Name, err)
			s.Timeouts++
			continue
		}
		s.Open = append(s.Open, s.latency(seen, at))
		if err := sleep(ctx, b.cfg.Gap); err != nil {
			return s, err
		}
	}
	return s, nil
}

// waitIdentityChange polls every node's ipcache entry of ip until each
// holds a cluster identity other than old[i]; it returns when the last
// node did.
func (b *bench) waitIdentityChange(ctx context.Context, ip netip.Addr, old []identity.ID) (time.Time, int, error) {
	done := make([]bool, len(b.caches))
	left, probes := len(done), 0
	deadline := time.Now().Add(b.cfg.ChangeLimit)
	for {
		for i, c := range b.caches {
			if done[i] {
				continue
			}
			probes++
			id, err := c.identity(ip)
			if err != nil {
				return time.Time{}, probes, err
			}
			if id != old[i] && id >= identity.MinCluster && id <= identity.MaxCluster {
				done[i] = true
				left--
			}
		}
		if left == 0 {
			return time.Now(), probes, nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, probes, fmt.Errorf("%s: %d node(s) still judge it by its old identity after %s", ip, left, b.cfg.ChangeLimit)
		}
		if err := ctx.Err(); err != nil {
			return time.Time{}, probes, err
		}
		time.Sleep(time.Millisecond)
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
