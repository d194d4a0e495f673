/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * tc_lb's drops: counted in fp_metrics and written to the verdict ring
 * (fp_verdicts, policy.h) with a reason, so one reader sees every drop of
 * the node. The records share policy's per-CPU budget (fp_drop_budget): a
 * flood of malformed packets cannot starve the ring of policy records for
 * longer than it takes the bucket to refill, and what is over the budget is
 * counted (FP_PMETRIC_RATE_LIMITED).
 */
#ifndef FASTPATH_DROP_H
#define FASTPATH_DROP_H

#include <linux/pkt_cls.h>
#include "metrics.h"
#include "pkt.h"
#include "policy.h"

static __always_inline __u8 fp_drop_reason(__u32 metric)
{
	switch (metric) {
	case FP_METRIC_DROP_NO_BACKEND:
		return FP_REASON_LB_NO_BACKEND;
	case FP_METRIC_DROP_SOURCE_RANGE:
		return FP_REASON_LB_SOURCE_RANGE;
	case FP_METRIC_DROP_CT_FULL:
		return FP_REASON_LB_CT_FULL;
	case FP_METRIC_DROP_BACKEND_GONE:
		return FP_REASON_LB_BACKEND_GONE;
	case FP_METRIC_DROP_SNAT_NO_PORT:
		return FP_REASON_LB_SNAT_NO_PORT;
	case FP_METRIC_DROP_NO_ROUTE:
		return FP_REASON_LB_NO_ROUTE;
	case FP_METRIC_DROP_SPOOFED:
		return FP_REASON_SPOOFED;
	}
	return FP_REASON_LB_MALFORMED;
}

/*
 * fp_drop_event writes the record of a packet tc_lb drops. Not inlined:
 * one copy for the dozen drop sites, and its stack is only in use while
 * it runs. From a pod's veth the source is that endpoint (direction
 * egress); elsewhere both identities come from the ipcache.
 */
static __noinline void fp_drop_event(struct __sk_buff *skb, const struct fp_pkt *p, __u32 reason, __u32 rev_nat_id)
{
	__u32 ifindex = skb->ifindex;
	struct fp_endpoint *ep = bpf_map_lookup_elem(&fp_endpoints, &ifindex);
	struct fp_pflow f = {
		.saddr = p->saddr, .daddr = p->daddr,
		.sport = bpf_ntohs(p->sport), .dport = bpf_ntohs(p->dport), .proto = p->proto,
	};
	__u32 src_id = ep ? ep->identity : fp_ipcache_identity(f.saddr);

	fp_verdict_emit(&f, src_id, fp_ipcache_identity(f.daddr), ep ? ep->id : 0,
			ep ? FP_DIR_EGRESS : FP_DIR_INGRESS, FP_VERDICT_DROP, reason, rev_nat_id);
}

/* fp_drop_svc drops p, counted as metric, for the service rev_nat_id. */
static __always_inline int fp_drop_svc(struct __sk_buff *skb, const struct fp_pkt *p, __u32 metric, __u32 rev_nat_id)
{
	fp_metric_add(metric, p->len);
	fp_drop_event(skb, p, fp_drop_reason(metric), rev_nat_id);
	return TC_ACT_SHOT;
}

static __always_inline int fp_drop(struct __sk_buff *skb, const struct fp_pkt *p, __u32 metric)
{
	return fp_drop_svc(skb, p, metric, 0);
}

#endif /* FASTPATH_DROP_H */
