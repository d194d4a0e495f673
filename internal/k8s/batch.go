package k8s

import (
	"cmp"
	"hash/maphash"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/fastpath-net/fastpath/internal/k8s/svctranslate"
	"github.com/fastpath-net/fastpath/internal/loadbalancer"
)

// take empties the dirty set and returns it with the node facts to
// translate against. Events after this mark Services dirty again, so
// nothing is lost between taking and reading the caches.
func (w *Watcher) take() ([]loadbalancer.ServiceName, svctranslate.Node, map[loadbalancer.ServiceName][]time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	names := make([]loadbalancer.ServiceName, 0, len(w.dirty))
	for n := range w.dirty {
		names = append(names, n)
	}
	if len(w.dirty) > 64 { // a cleared map keeps its size; see Table.resetDirty
		w.dirty = map[loadbalancer.ServiceName]struct{}{}
	} else {
		clear(w.dirty)
	}
	slices.SortFunc(names, compareNames)
	return names, w.node, w.takeTriggers(names)
}

// fullUpdate translates every Service in the caches: the first state after
// a start, which replaces whatever the receiver held.
func (w *Watcher) fullUpdate() Update {
	_, node, _ := w.take()
	w.mu.Lock()
	triggers := w.triggers // every slice change since the start
	w.triggers = map[loadbalancer.ServiceName][]time.Time{}
	w.mu.Unlock()
	svcs, err := w.services.List(labels.Everything())
	if err != nil { // a cache List does not fail; keep going with nothing
		w.log.Error("listing services from the cache", "error", err)
	}
	slices.SortFunc(svcs, func(a, b *corev1.Service) int {
		return compareNames(svctranslate.NameOf(a), svctranslate.NameOf(b))
	})
	u := Update{Full: true, HealthChecks: map[loadbalancer.ServiceName]HealthCheck{}}
	w.delivered = make(map[loadbalancer.ServiceName]delivery, len(svcs))
	for _, svc := range svcs {
		if res, hc, ok := w.translate(svc, node); ok {
			w.deliver(&u, res.Service, hc, triggers)
		}
	}
	return u
}

// deliver adds svc to u and remembers it as delivered.
func (w *Watcher) deliver(u *Update, svc loadbalancer.Service, hc HealthCheck, triggers map[loadbalancer.ServiceName][]time.Time) {
	w.delivered[svc.Name] = delivery{sum: w.sum(svc.Frontends), hc: hc}
	u.Upserted = append(u.Upserted, svc)
	u.HealthChecks[svc.Name] = hc
	u.TriggerTimes = append(u.TriggerTimes, triggers[svc.Name]...)
}

// batch translates the dirty Services and returns what changed since the
// last delivery.
func (w *Watcher) batch() Update {
	names, node, triggers := w.take()
	u := Update{HealthChecks: map[loadbalancer.ServiceName]HealthCheck{}}
	for _, name := range names {
		svc, hc, programmed := w.current(name, node)
		old, had := w.delivered[name]
		switch {
		case programmed && had && old == (delivery{sum: w.sum(svc.Frontends), hc: hc}):
			// Nothing this node programs changed (a status or label update).
		case programmed:
			w.deliver(&u, svc, hc, triggers)
		case had:
			delete(w.delivered, name)
			u.Deleted = append(u.Deleted, name)
			u.TriggerTimes = append(u.TriggerTimes, triggers[name]...)
		}
	}
	return u
}

// current translates the named Service as the caches hold it now; false
// when it is gone or programs nothing.
func (w *Watcher) current(name loadbalancer.ServiceName, node svctranslate.Node) (loadbalancer.Service, HealthCheck, bool) {
	svc, err := w.services.Services(name.Namespace).Get(name.Name)
	if err != nil { // a cache lister fails only with NotFound
		w.forget(name)
		return loadbalancer.Service{}, HealthCheck{}, false
	}
	res, hc, ok := w.translate(svc, node)
	return res.Service, hc, ok
}

// translate runs svctranslate for one Service, records which node facts it
// depends on, and reports its problems. ok is false when nothing of it is
// programmed.
func (w *Watcher) translate(svc *corev1.Service, node svctranslate.Node) (svctranslate.Result, HealthCheck, bool) {
	name := svctranslate.NameOf(svc)
	if w.translated != nil {
		w.translated(name)
	}
	eps := w.slicesOf(name)
	res := svctranslate.Translate(svc, eps, node)
	w.mu.Lock()
	setMember(w.addrUsers, name, res.UsesNodeAddresses)
	setMember(w.zoneUsers, name, res.UsesZone)
	w.mu.Unlock()
	w.rep.problems(name, res)
	if res.Skipped != "" {
		w.log.Debug("service not programmed", "service", name.String(), "reason", res.Skipped)
		return res, HealthCheck{}, false
	}
	return res, healthCheckOf(res, eps, node.Name), true
}

// forget drops everything kept about a deleted Service.
func (w *Watcher) forget(name loadbalancer.ServiceName) {
	w.mu.Lock()
	delete(w.addrUsers, name)
	delete(w.zoneUsers, name)
	w.mu.Unlock()
	w.rep.forget(name)
}

func setMember(set map[loadbalancer.ServiceName]struct{}, name loadbalancer.ServiceName, in bool) {
	if in {
		set[name] = struct{}{}
	} else {
		delete(set, name)
	}
}

// delivery is what the watcher keeps of a Service it delivered: enough to
// tell whether a new translation changes anything. A copy of the frontends
// would double what the agent's table holds.
type delivery struct {
	sum uint64 // of its frontends, in order (Watcher.sum)
	hc  HealthCheck
}

// sum hashes frontends, every field of every FrontendSpec, with the
// watcher's random seed: two translations with the same sum are taken as
// the same, wrongly once in 2^64 changes, and no input can be crafted to
// collide without the seed. TestSumCoversEveryField fails when a field is
// added to FrontendSpec and not here.
func (w *Watcher) sum(fes []loadbalancer.FrontendSpec) uint64 {
	var h maphash.Hash
	h.SetSeed(w.seed)
	maphash.WriteComparable(&h, len(fes))
	for i := range fes {
		fe := &fes[i]
		maphash.WriteComparable(&h, fe.Frontend)
		maphash.WriteComparable(&h, fe.AffinityTimeout)
		maphash.WriteComparable(&h, fe.ExtLocal)
		maphash.WriteComparable(&h, len(fe.Backends))
		for _, b := range fe.Backends {
			maphash.WriteComparable(&h, b)
		}
		maphash.WriteComparable(&h, len(fe.SourceRanges))
		for _, p := range fe.SourceRanges {
			maphash.WriteComparable(&h, p)
		}
	}
	return h.Sum64()
}

func compareNames(a, b loadbalancer.ServiceName) int {
	return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
}
