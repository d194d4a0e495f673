/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Service entry lookup by scope, shared by tc_lb and sock_lb. */
#ifndef FASTPATH_SERVICE_H
#define FASTPATH_SERVICE_H

#include "addr.h"
#include "maps.h"

/*
 * fp_svc_lookup returns the service entry (slot 0) for sk's address, port
 * and protocol, as Cilium does: traffic from inside the cluster (internal)
 * gets the INTERNAL entry where the control plane wrote one and the EXTERNAL
 * one otherwise; traffic from outside gets EXTERNAL only. EXTERNAL is looked
 * up first, and INTERNAL only when EXTERNAL says it has a twin
 * (FP_SVC_F_INTERNAL_TWIN): almost no frontend has one, and traffic to no
 * service (most of what pods send) then costs one lookup, not two. A flag
 * whose INTERNAL entry is missing (mid-update) falls back to EXTERNAL.
 * sk is left with slot 0 and the scope found, so slot lookups through sk
 * read the same entry set. An INTERNAL entry without backends is an
 * answer, not a miss: internalTrafficPolicy: Local without local endpoints
 * rejects.
 */
static __always_inline struct fp_svc_val *fp_svc_lookup(struct fp_svc_key *sk, int internal)
{
	struct fp_svc_val *svc, *twin;

	sk->slot = 0;
	sk->pad = 0;
	sk->scope = FP_SCOPE_EXTERNAL;
	svc = bpf_map_lookup_elem(&fp_services, sk);
	if (!svc || !internal || !(svc->flags & FP_SVC_F_INTERNAL_TWIN))
		return svc;
	sk->scope = FP_SCOPE_INTERNAL;
	twin = bpf_map_lookup_elem(&fp_services, sk);
	if (twin)
		return twin;
	sk->scope = FP_SCOPE_EXTERNAL;
	return svc;
}

/*
 * fp_source_allowed says whether a new flow from saddr may use service entry
 * svc: always, unless the entry has loadBalancerSourceRanges
 * (FP_SVC_F_SOURCE_RANGES); then only when saddr lies in one of the ranges
 * fp_source_ranges holds for the entry's frontend (its rev_nat_id). The
 * control plane adds the node's own cases (kube-proxy's allowFromNode) as
 * ranges, and writes no flag for a /0 range.
 */
static __always_inline int fp_source_allowed(const struct fp_svc_val *svc, __be32 saddr)
{
	struct fp_source_range_key k;

	if (!(svc->flags & FP_SVC_F_SOURCE_RANGES))
		return 1;
	k.prefix_len = 32 + 128;
	k.rev_nat_id = svc->rev_nat_id;
	fp_addr_set_v4(&k.addr, saddr);
	return bpf_map_lookup_elem(&fp_source_ranges, &k) != NULL;
}

#endif /* FASTPATH_SERVICE_H */
