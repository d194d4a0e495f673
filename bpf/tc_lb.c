// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Per-packet service load balancing at TC ingress of every interface of a
 * node, client-facing and backend-facing alike, for IPv4 TCP, UDP and SCTP.
 *
 * For each packet, in order:
 *   1. a reply of a balanced flow (REPLY ct entry): source back to VIP:port;
 *   2. a packet of a balanced flow (FORWARD ct entry): destination to the
 *      backend recorded at the flow's first packet, present or not;
 *   3. the first packet to a service: pick a backend slot at random, or the
 *      client's previous one for a service with session affinity
 *      (affinity.h), record both ct entries, destination to the backend;
 *   4. a service without backends: ICMP port unreachable back to the client;
 * and ICMP errors about balanced flows are translated like their flows.
 * Everything else passes untouched.
 *
 * Choices:
 *   - A TCP packet without SYN that finds no ct entry (entry evicted, map
 *     lost) is balanced like a SYN. With one backend, or when the pick is the
 *     old backend, the flow survives; otherwise the new backend answers
 *     with a RST and the client fails fast instead of timing out.
 *   - IPv4 headers that no receiver accepts (short, ihl < 5, version != 4)
 *     and transport headers too short for their protocol are dropped and
 *     counted as malformed. Non-IPv4, non-first fragments, other protocols
 *     and ICMP that is not an error about a balanced flow pass untouched.
 *   - A packet that cannot be rewritten half-way (a helper fails, which
 *     means memory pressure) is dropped and counted as malformed too.
 *   - "Not ours" is TC_ACT_OK, which under TCX is TCX_PASS: programs
 *     attached after this one on the same hook do not run. Chaining would
 *     need TCX_NEXT (-1) there instead.
 *
 * Not handled here: ICMP errors the node itself sends about a DNATed packet
 * (frag needed towards the backend, TTL exceeded) leave through egress,
 * which this program does not see, so the client gets them untranslated.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "maps.h"
#include "metrics.h"
#include "pkt.h"
#include "nat.h"
#include "ct.h"
#include "affinity.h"
#include "icmp.h"
#include "reject.h"

/* Not a verdict: the stage did not match, try the next one. */
#define FP_NEXT (-100)

static __always_inline int fp_drop(const struct fp_pkt *p, __u32 metric)
{
	fp_metric_add(metric, p->len);
	return TC_ACT_SHOT;
}

/* fp_reply reverse-NATs a reply of a balanced flow: backend -> client. */
static __always_inline int fp_reply(struct __sk_buff *skb, const struct fp_pkt *p)
{
	struct fp_ct_key key;
	struct fp_ct_entry *e;
	struct fp_rev_nat *rn;

	fp_ct_key_v4(&key, p->saddr, p->daddr, p->sport, p->dport, p->proto, FP_CT_REPLY);
	e = bpf_map_lookup_elem(&fp_ct, &key);
	if (!e)
		return FP_NEXT;
	/* The service is gone: leave the reply alone and let the entry age out. */
	rn = bpf_map_lookup_elem(&fp_rev_nat, &e->rev_nat_id);
	if (!rn || !fp_addr_is_v4(&rn->addr))
		return TC_ACT_OK;
	if (fp_nat(skb, p, FP_SRC, rn->addr.w[3], bpf_htons(rn->port)) < 0)
		return fp_drop(p, FP_METRIC_DROP_MALFORMED);
	fp_ct_touch(e, p, FP_CT_F_SEEN_REPLY);
	fp_metric_add(FP_METRIC_REPLY_REVNAT, p->len);
	return TC_ACT_OK;
}

/* fp_established sends a packet of a tracked flow to the flow's backend. */
static __always_inline int fp_established(struct __sk_buff *skb, const struct fp_pkt *p,
					  struct fp_ct_entry *e)
{
	if (!fp_addr_is_v4(&e->nat_addr))
		return fp_drop(p, FP_METRIC_DROP_BACKEND_GONE);
	if (fp_nat(skb, p, FP_DST, e->nat_addr.w[3], bpf_htons(e->nat_port)) < 0)
		return fp_drop(p, FP_METRIC_DROP_MALFORMED);
	fp_ct_touch(e, p, 0);
	fp_metric_add(FP_METRIC_FORWARD_CT, p->len);
	return TC_ACT_OK;
}

/* fp_affinity_key_tc: at TC a client is its source address. */
static __always_inline void fp_affinity_key_tc(struct fp_affinity_key *k, const struct fp_pkt *p,
					       __u32 rev_nat_id)
{
	__builtin_memset(k, 0, sizeof(*k));
	fp_addr_set_v4(&k->client, p->saddr);
	k->rev_nat_id = rev_nat_id;
}

/*
 * fp_pick chooses a backend of the service at p's destination. It returns
 * FP_NEXT with c and the client's affinity key ak filled, or a verdict: pass
 * (not a service), reject (no backends) or drop (the slot is missing or
 * names a backend that does not exist).
 */
static __always_inline int fp_pick(struct __sk_buff *skb, const struct fp_pkt *p,
				   struct fp_choice *c, struct fp_affinity_key *ak)
{
	struct fp_svc_key sk = {};
	struct fp_svc_val *svc, *slot;
	struct fp_backend *be;
	__u32 backend_id;

	fp_addr_set_v4(&sk.addr, p->daddr);
	sk.port = bpf_ntohs(p->dport);
	sk.proto = p->proto;
	sk.scope = FP_SCOPE_EXTERNAL;
	svc = bpf_map_lookup_elem(&fp_services, &sk);
	if (!svc)
		return TC_ACT_OK;
	if (svc->count == 0) {
		fp_metric_add(FP_METRIC_DROP_NO_BACKEND, p->len);
		return fp_reject(skb, p);
	}
	c->rev_nat_id = svc->rev_nat_id;
	c->affinity = fp_affinity_on(svc);
	fp_affinity_key_tc(ak, p, c->rev_nat_id);
	slot = fp_slot_pick(&sk, svc, ak);
	if (!slot)
		return fp_drop(p, FP_METRIC_DROP_BACKEND_GONE);
	backend_id = slot->backend_id;
	be = bpf_map_lookup_elem(&fp_backends, &backend_id);
	/* An IPv6 backend behind an IPv4 frontend would need NAT46. */
	if (!be || !fp_addr_is_v4(&be->addr))
		return fp_drop(p, FP_METRIC_DROP_BACKEND_GONE);
	c->addr = be->addr;
	c->port = be->port;
	c->backend_id = backend_id;
	c->slot = sk.slot;
	return FP_NEXT;
}

/* fp_forward handles a packet that is not a reply: tracked flow or new one. */
static __always_inline int fp_forward(struct __sk_buff *skb, const struct fp_pkt *p)
{
	struct fp_affinity_key ak;
	struct fp_choice c = {};
	struct fp_ct_key key;
	struct fp_ct_entry *e;
	__u64 flag = BPF_NOEXIST;
	long err;
	int ret;

	fp_ct_key_v4(&key, p->saddr, p->daddr, p->sport, p->dport, p->proto, FP_CT_FORWARD);
	e = bpf_map_lookup_elem(&fp_ct, &key);
	if (e) {
		if (!fp_ct_reopen(e, p))
			return fp_established(skb, p, e);
		flag = BPF_ANY;
	}

	ret = fp_pick(skb, p, &c, &ak);
	if (ret != FP_NEXT)
		return ret;
	err = fp_ct_create(&key, p, &c, flag);
	if (err == -EEXIST) {
		/* Another CPU balanced this flow first: follow its choice. */
		e = bpf_map_lookup_elem(&fp_ct, &key);
		if (e)
			return fp_established(skb, p, e);
	}
	if (err)
		return fp_drop(p, FP_METRIC_DROP_CT_FULL);
	/* Only once the flow is ours: a CPU that lost the race above follows
	 * the winner, which remembered its own choice. */
	if (c.affinity)
		fp_affinity_remember(&ak, c.backend_id, c.slot);
	if (fp_nat(skb, p, FP_DST, c.addr.w[3], bpf_htons(c.port)) < 0)
		return fp_drop(p, FP_METRIC_DROP_MALFORMED);
	fp_metric_add(FP_METRIC_FORWARD_NEW, p->len);
	return TC_ACT_OK;
}

/*
 * fp_icmp translates an ICMP error about a balanced flow. Either it comes
 * from the backend's side and quotes a client -> backend packet (REPLY entry
 * of the swapped quote: back to the VIP), or it comes from the client's side
 * and quotes a VIP -> client reply (FORWARD entry of the swapped quote: on to
 * the backend, so PMTU discovery works for backends too).
 */
static __always_inline int fp_icmp(struct __sk_buff *skb, const struct fp_pkt *p)
{
	struct fp_inner in = {};
	struct fp_ct_key key;
	struct fp_ct_entry *e;
	struct fp_rev_nat *rn;

	if (!fp_icmp_is_error(p->icmp_type) || fp_icmp_inner(skb, p, &in) < 0)
		return TC_ACT_OK;

	fp_ct_key_v4(&key, in.daddr, in.saddr, in.dport, in.sport, in.proto, FP_CT_REPLY);
	e = bpf_map_lookup_elem(&fp_ct, &key);
	if (e) {
		rn = bpf_map_lookup_elem(&fp_rev_nat, &e->rev_nat_id);
		if (!rn || !fp_addr_is_v4(&rn->addr))
			return TC_ACT_OK;
		if (fp_icmp_xlate(skb, p, &in, FP_DST, rn->addr.w[3], bpf_htons(rn->port)) < 0)
			return fp_drop(p, FP_METRIC_DROP_MALFORMED);
		fp_metric_add(FP_METRIC_ICMP_ERR_REVNAT, p->len);
		return TC_ACT_OK;
	}

	key.dir = FP_CT_FORWARD;
	e = bpf_map_lookup_elem(&fp_ct, &key);
	if (!e || !fp_addr_is_v4(&e->nat_addr))
		return TC_ACT_OK;
	if (fp_icmp_xlate(skb, p, &in, FP_SRC, e->nat_addr.w[3], bpf_htons(e->nat_port)) < 0)
		return fp_drop(p, FP_METRIC_DROP_MALFORMED);
	fp_metric_add(FP_METRIC_FORWARD_CT, p->len);
	return TC_ACT_OK;
}

SEC("tc")
int fp_tc_lb(struct __sk_buff *skb)
{
	struct fp_pkt p = {};
	int ret;

	switch (fp_parse(skb, &p)) {
	case FP_PARSE_OK:
		break;
	case FP_PARSE_MALFORMED:
		p.len = skb->len;
		return fp_drop(&p, FP_METRIC_DROP_MALFORMED);
	default:
		return TC_ACT_OK;
	}
	if (p.proto == IPPROTO_ICMP)
		return fp_icmp(skb, &p);
	ret = fp_reply(skb, &p);
	if (ret != FP_NEXT)
		return ret;
	return fp_forward(skb, &p);
}

char __license[] SEC("license") = "Dual BSD/GPL";
