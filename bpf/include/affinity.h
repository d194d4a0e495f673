/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Session affinity (sessionAffinity: ClientIP), shared by tc_lb and sock_lb:
 * choose the backend slot of a new connection, and remember the choice in
 * fp_affinity. Callers build the key; they differ only in what "a client" is.
 *
 * It behaves like kube-proxy's iptables `recent` match:
 *   - a new connection goes to the backend its client got last, if that was
 *     at most affinity_timeout seconds ago (--rcheck --seconds);
 *   - every new connection, remembered or picked at random, records now as
 *     the client's last use (--set). Packets of established connections do
 *     not: a long-lived connection does not keep the affinity alive, in
 *     kube-proxy as here, and the per-packet path needs no extra lookup.
 *
 * A memory is followed only while the slot it names still holds the backend
 * it names. So a backend removed from the service is never reused through
 * affinity, at once and with no cleanup by the agent. The price: when the
 * reconciler moves a backend to another slot (one before it was removed),
 * its clients get one fresh random pick. Checking one slot is a single
 * lookup; finding the backend in any slot would be a scan of up to
 * count slots per new connection.
 *
 * A reused rev_nat_id (a frontend deleted, its id given to a new one) is
 * harmless for the same reason: an old memory is followed only if the new
 * service's slot holds that very backend.
 */
#ifndef FASTPATH_AFFINITY_H
#define FASTPATH_AFFINITY_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "maps.h"

/* fp_affinity_on says whether a service entry (slot 0) asks for affinity. */
static __always_inline int fp_affinity_on(const struct fp_svc_val *svc)
{
	return (svc->flags & FP_SVC_F_AFFINITY) && svc->affinity_timeout;
}

/*
 * fp_affinity_slot returns the service slot the client's memory names when
 * that memory is fresh and the slot still holds the remembered backend, NULL
 * otherwise. sk is the service's key; its slot is changed.
 */
static __always_inline struct fp_svc_val *
fp_affinity_slot(const struct fp_affinity_key *ak, struct fp_svc_key *sk,
		 const struct fp_svc_val *svc)
{
	struct fp_affinity_val *a = bpf_map_lookup_elem(&fp_affinity, ak);
	__u64 ttl = (__u64)svc->affinity_timeout * FP_NSEC_PER_SEC;
	struct fp_svc_val *slot;

	/* A last_used in the future (written by hand) wraps around: stale. */
	if (!a || bpf_ktime_get_boot_ns() - a->last_used > ttl)
		return NULL;
	/* Above count: a slot that a shrinking service has not deleted yet. */
	if (a->slot == 0 || a->slot > svc->count)
		return NULL;
	sk->slot = a->slot;
	slot = bpf_map_lookup_elem(&fp_services, sk);
	if (!slot || slot->backend_id != a->backend_id)
		return NULL;
	return slot;
}

/*
 * fp_slot_pick chooses the slot for a new connection of the client ak to the
 * service with key sk and entry svc (slot 0, count > 0): the remembered one
 * when affinity applies, else one at random. It returns the slot's entry and
 * leaves its number in sk->slot, or NULL when that slot is missing (a
 * reconciler mid-update).
 */
static __always_inline struct fp_svc_val *
fp_slot_pick(struct fp_svc_key *sk, const struct fp_svc_val *svc,
	     const struct fp_affinity_key *ak)
{
	struct fp_svc_val *slot;

	if (fp_affinity_on(svc)) {
		slot = fp_affinity_slot(ak, sk, svc);
		if (slot)
			return slot;
	}
	sk->slot = (bpf_get_prandom_u32() % svc->count) + 1;
	return bpf_map_lookup_elem(&fp_services, sk);
}

/*
 * fp_affinity_remember records the backend a client's new connection got.
 * A failed update is ignored: the connection works, only the memory is lost
 * and the next connection is picked at random.
 */
static __always_inline void fp_affinity_remember(const struct fp_affinity_key *ak,
						 __u32 backend_id, __u16 slot)
{
	struct fp_affinity_val v = {
		.backend_id = backend_id,
		.slot = slot,
		.last_used = bpf_ktime_get_boot_ns(),
	};

	bpf_map_update_elem(&fp_affinity, ak, &v, BPF_ANY);
}

#endif /* FASTPATH_AFFINITY_H */
