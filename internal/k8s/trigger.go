package k8s

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"

	"github.com/fastpath-net/fastpath/internal/loadbalancer"
)

// Trigger times feed the network-programming latency, with kube-proxy's
// rules (pkg/proxy/endpointschangetracker.go): the
// endpoints.kubernetes.io/last-change-trigger-time annotation of an added or
// updated EndpointSlice, when it parses as RFC 3339 and is later than the
// watcher's start (the initial list describes changes made long before);
// a deleted slice drops its Service's pending times (its annotation is the
// time of the last update, not of the deletion). A time is delivered only
// with a batch that changes its Service, as kube-proxy records one only when
// the slice changed what it programs.

// endpointsChanged tells a slice update that can change what is programmed
// from one that cannot (labels, annotations alone), whose trigger time
// kube-proxy ignores (endpointSliceCache.updatePending).
func endpointsChanged(old, cur any) bool {
	o, ok1 := old.(*discoveryv1.EndpointSlice)
	c, ok2 := cur.(*discoveryv1.EndpointSlice)
	return !ok1 || !ok2 || o.AddressType != c.AddressType ||
		!equality.Semantic.DeepEqual(o.Endpoints, c.Endpoints) || !equality.Semantic.DeepEqual(o.Ports, c.Ports)
}

// What a slice event does to its Service's pending trigger times.
type triggerAction int

const (
	triggerRecord triggerAction = iota // added or changed: record its time
	triggerIgnore                      // changed nothing programmed
	triggerDrop                        // deleted: drop the pending times
)

// noteSlice applies act, files the slice under its Service (or removes it
// when deleted) and marks the Service dirty, under one lock so the worker
// never takes the name without its time and its slices.
func (w *Watcher) noteSlice(obj any, act triggerAction) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return
	}
	name, ok := sliceService(s)
	if !ok {
		return
	}
	w.mu.Lock()
	switch t := triggerTime(s.Annotations); {
	case act == triggerDrop:
		delete(w.triggers, name)
	case act == triggerRecord && t.After(w.started):
		w.triggers[name] = append(w.triggers[name], t)
	}
	if act == triggerDrop {
		w.unfile(name, s)
	} else {
		w.file(name, s)
	}
	w.dirty[name] = struct{}{}
	w.mu.Unlock()
	w.wake()
}

// triggerTime is the annotation's time; zero when absent or malformed.
func triggerTime(ann map[string]string) time.Time {
	v, ok := ann[corev1.EndpointsLastChangeTriggerTime]
	if !ok {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}
	}
	return t
}

// takeTriggers returns the pending times of the named Services and drops
// them; the caller holds w.mu.
func (w *Watcher) takeTriggers(names []loadbalancer.ServiceName) map[loadbalancer.ServiceName][]time.Time {
	if len(w.triggers) == 0 {
		return nil
	}
	out := make(map[loadbalancer.ServiceName][]time.Time)
	for _, n := range names {
		if ts, ok := w.triggers[n]; ok {
			out[n] = ts
			delete(w.triggers, n)
		}
	}
	return out
}
