/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The verdict ring (fp_verdicts) and what every program writing to it
 * shares: the record, the reasons, the sampling of allows and the per-CPU
 * budget of drop records (fp_policy_config, fp_policy_rl), the counters of
 * records not written (fp_policy_metrics). Written by tc_policy (policy.h),
 * tc_lb (drop.h) and sock_lb; read by the agent (internal/agent/flows.go).
 * The map names keep their policy_ prefix: they are pinned under them.
 */
#ifndef FASTPATH_VERDICT_H
#define FASTPATH_VERDICT_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "fastpath.h"
#include "addr.h"

/* Direction as seen from the endpoint. */
#define FP_DIR_INGRESS 0
#define FP_DIR_EGRESS 1

/* The flow one packet belongs to, as policy sees it. */
struct fp_pflow {
	__be32 saddr;
	__be32 daddr;
	__u16 sport; /* host byte order */
	__u16 dport;
	__u8 proto;
};

/* One record of the verdict ring buffer. */
struct fp_verdict {
	__u64 ts_ns;
	union fp_addr saddr;
	union fp_addr daddr;
	__u32 src_identity;
	__u32 dst_identity;
	__u16 sport;
	__u16 dport;
	__u16 endpoint;
	__u8 proto;
	__u8 dir;
	__u8 verdict; /* FP_VERDICT_* */
	__u8 reason;  /* FP_REASON_* */
	__u16 pad;
	__u32 cookie;
};

#define FP_VERDICT_DROP 0
#define FP_VERDICT_ALLOW 1

/* Why a record was written. Values are stable: the agent and fastpathctl
 * turn them into sentences (internal/datapath/policymap ReasonName). The
 * FP_REASON_LB_* ones come from tc_lb (bpf/include/drop.h), their cookie
 * is the service's rev_nat_id (0 when the drop has no service). */
enum fp_reason {
	FP_REASON_POLICY_ALLOWED = 0,
	FP_REASON_POLICY_DENIED,
	FP_REASON_CT_FULL, /* fp_policy_ct insert failed */
	FP_REASON_RELATED_ALLOWED,
	FP_REASON_LB_NO_BACKEND,   /* service without backends: rejected (ICMP) */
	FP_REASON_LB_SOURCE_RANGE, /* outside loadBalancerSourceRanges */
	FP_REASON_LB_CT_FULL,      /* fp_ct insert failed */
	FP_REASON_LB_MALFORMED,    /* bad header, or a rewrite failed */
	FP_REASON_LB_BACKEND_GONE, /* the slot's backend does not exist */
	FP_REASON_LB_SNAT_NO_PORT, /* masquerade / tuple clash: no free port */
	FP_REASON_LB_NO_ROUTE,     /* masqueraded packet: no route, neighbour or MTU */
	FP_REASON_FORWARDED,       /* allow: a new flow into a pod no ingress policy selects */
	/* L7 policy; numbered apart from the reasons tc_lb adds. */
	FP_REASON_PROXY_REDIRECT = 16, /* allowed at L4, sent to the L7 proxy */
	FP_REASON_NO_PROXY = 17,       /* needs the L7 proxy, which cannot take it here */
	FP_REASON_SPOOFED = 18,        /* a pod sent from an address not its own */
};

/* policy config: sampling of allow events (1 in allow_sample; 0 = none)
 * and a per-CPU budget of drop events per second (0 = no limit). */
struct fp_policy_cfg {
	__u32 allow_sample;
	__u32 drops_per_sec;
};

/* Per-CPU token bucket of drop events (fp_policy_rl). */
struct fp_policy_bucket {
	__u64 tokens;
	__u64 last_ns;
};

/* Per-CPU counters of the policy program (fp_policy_metrics). */
enum fp_policy_metric {
	FP_PMETRIC_RING_LOST = 0, /* a verdict record did not fit the ring */
	FP_PMETRIC_DROPPED,       /* packets dropped by policy */
	FP_PMETRIC_RATE_LIMITED,  /* drop records not written: over drops_per_sec */
	FP_PMETRIC_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fp_verdicts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, FP_PMETRIC_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fp_policy_metrics SEC(".maps");

static __always_inline void fp_pmetric_inc(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&fp_policy_metrics, &idx);

	if (c)
		(*c)++;
}

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct fp_policy_cfg);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fp_policy_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct fp_policy_bucket);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fp_policy_rl SEC(".maps");

/* fp_drop_budget takes a token for one drop record: a burst of
 * drops_per_sec, refilled at drops_per_sec per second, per CPU. */
static __always_inline int fp_drop_budget(const struct fp_policy_cfg *cfg)
{
	__u32 zero = 0;
	struct fp_policy_bucket *b;
	__u64 now, add;

	if (!cfg || !cfg->drops_per_sec)
		return 1;
	b = bpf_map_lookup_elem(&fp_policy_rl, &zero);
	if (!b)
		return 1;
	now = bpf_ktime_get_ns();
	if (b->last_ns == 0) {
		b->tokens = cfg->drops_per_sec;
	} else if (now > b->last_ns) {
		add = (now - b->last_ns) * cfg->drops_per_sec / 1000000000ULL;
		b->tokens = b->tokens + add > cfg->drops_per_sec ? cfg->drops_per_sec : b->tokens + add;
		if (!add)
			now = b->last_ns; /* keep the fraction for the next packet */
	}
	b->last_ns = now;
	if (!b->tokens)
		return 0;
	b->tokens--;
	return 1;
}

/* fp_verdict_wanted: whether a record of this verdict is to be written:
 * allows 1 in allow_sample, drops within the per-CPU budget (the rest is
 * counted). */
static __always_inline int fp_verdict_wanted(__u8 verdict)
{
	__u32 zero = 0;
	struct fp_policy_cfg *cfg = bpf_map_lookup_elem(&fp_policy_config, &zero);

	if (verdict == FP_VERDICT_ALLOW)
		return cfg && cfg->allow_sample && !(bpf_get_prandom_u32() % cfg->allow_sample);
	if (!fp_drop_budget(cfg)) {
		fp_pmetric_inc(FP_PMETRIC_RATE_LIMITED);
		return 0;
	}
	return 1;
}

/* fp_verdict_write writes one record, counting it when the ring is full. */
static __always_inline void fp_verdict_write(const struct fp_pflow *f, __u32 src_id, __u32 dst_id, __u16 ep,
					     __u8 dir, __u8 verdict, __u8 reason, __u32 cookie)
{
	struct fp_verdict *e = bpf_ringbuf_reserve(&fp_verdicts, sizeof(*e), 0);

	if (!e) {
		fp_pmetric_inc(FP_PMETRIC_RING_LOST);
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	fp_addr_set_v4(&e->saddr, f->saddr);
	fp_addr_set_v4(&e->daddr, f->daddr);
	e->src_identity = src_id;
	e->dst_identity = dst_id;
	e->sport = f->sport;
	e->dport = f->dport;
	e->endpoint = ep;
	e->proto = f->proto;
	e->dir = dir;
	e->verdict = verdict;
	e->reason = reason;
	e->cookie = cookie;
	bpf_ringbuf_submit(e, 0);
}

static __always_inline void fp_verdict_emit(const struct fp_pflow *f, __u32 src_id, __u32 dst_id, __u16 ep,
					    __u8 dir, __u8 verdict, __u8 reason, __u32 cookie)
{
	if (fp_verdict_wanted(verdict))
		fp_verdict_write(f, src_id, dst_id, ep, dir, verdict, reason, cookie);
}

#endif /* FASTPATH_VERDICT_H */
