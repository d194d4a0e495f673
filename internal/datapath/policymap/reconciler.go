package policymap

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/fastpath-net/fastpath/internal/datapath/bpfmap"
	"github.com/fastpath-net/fastpath/internal/identity"
	"github.com/fastpath-net/fastpath/internal/policy"
)

// Maps are the maps the Reconciler writes.
type Maps struct {
	IPCache   bpfmap.Map[IPCacheKey, IPCacheValue]
	Endpoints bpfmap.Map[uint32, Endpoint] // by host-veth ifindex
	Policy    bpfmap.Map[PolicyKey, PolicyValue]
}

// Attachment is where an endpoint's pod is plumbed: its host veth and its
// endpoint id, both from the CNI's endpoint records.
type Attachment struct {
	Ifindex uint32
	ID      uint16
	Addr4   netip.Addr // the pod's IPv4 address (source validation); zero: none
}

// Reconciler writes policy.ChangeSets into the maps, touching only what
// changed, in an order that never denies what both the old and the new
// policy allow nor allows what neither does:
//
//   - ipcache entries are written before the policy entries that may name
//     their identities, and deleted after;
//   - an endpoint's new keys are written before its enforcement flags, and
//     its stale keys deleted after them (so enforcement starts with its
//     allows in place and stops before they go).
//
// It owns fp_endpoints: the CNI reports attachments, the Reconciler
// writes the records with the enforcement flags.
type Reconciler struct {
	maps  Maps
	Rules Rules
	// attach finds a pod's attachment; pods without one (not plumbed yet)
	// wait for Attached.
	attach  func(policy.PodName) (Attachment, bool)
	written map[uint16]*epState // by endpoint id
	pending map[policy.PodName]*policy.EndpointPolicy
}

type epState struct {
	pod     policy.PodName
	ifindex uint32
	record  Endpoint
	keys    map[PolicyKey]PolicyValue
}

// NewReconciler writes into maps; attach resolves pods to attachments.
func NewReconciler(m Maps, attach func(policy.PodName) (Attachment, bool)) *Reconciler {
	return &Reconciler{maps: m, attach: attach, written: map[uint16]*epState{}, pending: map[policy.PodName]*policy.EndpointPolicy{}}
}

// Restore reads what a previous agent wrote, so that the first Apply
// writes only differences. Endpoints nobody claims afterwards are removed
// by Prune.
func (r *Reconciler) Restore() error {
	recs, err := r.maps.Endpoints.All()
	if err != nil {
		return err
	}
	for ifindex, rec := range recs {
		r.written[rec.ID] = &epState{ifindex: ifindex, record: rec, keys: map[PolicyKey]PolicyValue{}}
	}
	return r.maps.Policy.Range(func(k PolicyKey, v PolicyValue) bool {
		st, ok := r.written[k.Endpoint]
		if !ok {
			// Keys of an endpoint without a record: stale, Prune removes them.
			st = &epState{keys: map[PolicyKey]PolicyValue{}}
			r.written[k.Endpoint] = st
		}
		st.keys[k] = v
		return true
	})
}

// Prune removes the records and keys of endpoint ids not in live.
func (r *Reconciler) Prune(live func(id uint16) bool) error {
	for _, id := range slices.Sorted(maps.Keys(r.written)) {
		if live(id) {
			continue
		}
		if err := r.remove(id); err != nil {
			return err
		}
	}
	return nil
}

// Apply writes one ChangeSet.
func (r *Reconciler) Apply(cs policy.ChangeSet) error {
	if err := r.ipcacheUpserts(cs.IPCache.Upsert); err != nil {
		return err
	}
	for _, ep := range cs.Upserted {
		if err := r.upsert(ep); err != nil {
			return err
		}
	}
	for _, pod := range cs.Deleted {
		delete(r.pending, pod)
		for id, st := range r.written {
			if st.pod == pod {
				if err := r.remove(id); err != nil {
					return err
				}
			}
		}
	}
	keys := make([]IPCacheKey, len(cs.IPCache.Delete))
	for i, p := range cs.IPCache.Delete {
		keys[i] = IPCacheKeyOf(p)
	}
	return r.maps.IPCache.Delete(keys)
}

// Attached writes the policy of a pod that was waiting for its attachment.
func (r *Reconciler) Attached(pod policy.PodName) error {
	ep, ok := r.pending[pod]
	if !ok {
		return nil
	}
	return r.upsert(ep)
}

// SyncIPCache makes the ipcache equal want (after Restore, with the
// Engine's IPCache), writing only differences.
func (r *Reconciler) SyncIPCache(want map[netip.Prefix]identity.ID) error {
	have, err := r.maps.IPCache.All()
	if err != nil {
		return err
	}
	wantKeys := make(map[IPCacheKey]IPCacheValue, len(want))
	for p, id := range want {
		wantKeys[IPCacheKeyOf(p)] = IPCacheValue{Identity: uint32(id)}
	}
	var upK []IPCacheKey
	var upV []IPCacheValue
	for k, v := range wantKeys {
		if cur, ok := have[k]; !ok || cur != v {
			upK, upV = append(upK, k), append(upV, v)
		}
	}
	if err := r.maps.IPCache.Update(upK, upV); err != nil {
		return err
	}
	var del []IPCacheKey
	for k := range have {
		if _, ok := wantKeys[k]; !ok {
			del = append(del, k)
		}
	}
	return r.maps.IPCache.Delete(del)
}

func (r *Reconciler) ipcacheUpserts(up map[netip.Prefix]identity.ID) error {
	keys := make([]IPCacheKey, 0, len(up))
	vals := make([]IPCacheValue, 0, len(up))
	for p, id := range up {
		keys = append(keys, IPCacheKeyOf(p))
		vals = append(vals, IPCacheValue{Identity: uint32(id)})
	}
	return r.maps.IPCache.Update(keys, vals)
}

func (r *Reconciler) upsert(ep *policy.EndpointPolicy) error {
	at, ok := r.attach(ep.Pod)
	if !ok {
		r.pending[ep.Pod] = ep
		return nil
	}
	delete(r.pending, ep.Pod)
	st, ok := r.written[at.ID]
	if !ok {
		st = &epState{keys: map[PolicyKey]PolicyValue{}}
		r.written[at.ID] = st
	}
	if st.ifindex != 0 && st.ifindex != at.Ifindex {
		// The id moved to another veth (pod re-created): drop the old record.
		if err := r.maps.Endpoints.Delete([]uint32{st.ifindex}); err != nil {
			return err
		}
	}
	st.pod, st.ifindex = ep.Pod, at.Ifindex
	want := Keys(at.ID, ep, &r.Rules)
	var upK []PolicyKey
	var upV []PolicyValue
	for k, v := range want {
		if cur, ok := st.keys[k]; !ok || cur != v {
			upK, upV = append(upK, k), append(upV, v)
		}
	}
	if err := r.maps.Policy.Update(upK, upV); err != nil {
		return fmt.Errorf("policy of %s: %w", ep.Pod, err)
	}
	for i, k := range upK {
		st.keys[k] = upV[i]
	}
	rec := EndpointValue(at.ID, at.Addr4, ep)
	if rec != st.record {
		if err := r.maps.Endpoints.Update([]uint32{at.Ifindex}, []Endpoint{rec}); err != nil {
			return err
		}
		st.record = rec
	}
	var del []PolicyKey
	for k := range st.keys {
		if _, ok := want[k]; !ok {
			del = append(del, k)
		}
	}
	if err := r.maps.Policy.Delete(del); err != nil {
		return err
	}
	for _, k := range del {
		delete(st.keys, k)
	}
	return nil
}

// remove deletes an endpoint's record first (it stops being enforced),
// then its keys.
func (r *Reconciler) remove(id uint16) error {
	st := r.written[id]
	if st.ifindex != 0 {
		if err := r.maps.Endpoints.Delete([]uint32{st.ifindex}); err != nil {
			return err
		}
	}
	if err := r.maps.Policy.Delete(slices.Collect(maps.Keys(st.keys))); err != nil {
		return err
	}
	delete(r.written, id)
	return nil
}
