// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Per-packet service load balancing at TC ingress of every interface of a
 * node, client-facing and backend-facing alike, for IPv4 TCP, UDP and SCTP.
 *
 * For each packet, in order:
 *   1. a reply of a balanced flow (REPLY ct entry): source back to VIP:port;
 *      an entry left over from a flow that is no more is deleted instead,
 *      and the packet taken as if it had not been there (ct.h);
 *   2. a packet of a balanced flow (FORWARD ct entry): destination to the
 *      backend recorded at the flow's first packet, present or not;
 *   3. the first packet to a service: pick a backend slot at random, or the
 *      client's previous one for a service with session affinity
 *      (affinity.h), record both ct entries, destination to the backend;
 *      when another flow holds the resulting tuple at the backend, the
 *      source port too (a port of its own, ct.h);
 *   4. a service without backends: ICMP port unreachable back to the client;
 *      a new flow from outside a frontend's loadBalancerSourceRanges is
 *      dropped before either (FP_SVC_F_SOURCE_RANGES, service.h);
 * and ICMP errors about balanced flows are translated like their flows.
 * Everything else passes untouched.
 *
 * Each interface has a role, fixed when the program instance attached to it
 * is loaded (fp_iface_role): internal interfaces face pods and other
 * clients inside the cluster, external ones the node's uplinks. New flows
 * from internal interfaces see a service's INTERNAL entry where there is one
 * and its EXTERNAL entry otherwise, those from external interfaces only the
 * EXTERNAL entry (service.h). Some new flows are masqueraded as well as
 * DNATed (snat.h): hairpin ones, and external ones unless the service keeps
 * source addresses (externalTrafficPolicy: Local). A masqueraded flow's
 * packets leave through the FIB's interface directly instead of the stack.
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
 *   - A new flow whose tuple at the backend a closed flow holds, in the
 *     backend's TIME_WAIT, takes it over with the client's port, its TCP
 *     timestamps shifted past the closed flow's when they are older, as a
 *     direct reconnect would reopen it (ct.h, timestamp translation).
 *     One whose tuple a live flow holds, or that cannot take it over (no
 *     timestamps), gets a source port of its own rather than the
 *     backend's PAWS drop of its SYN or the other flow's replies; with no
 *     port free it is dropped (DROP_SNAT_NO_PORT) and the client's
 *     retransmission tries again.
 *   - "Not ours / done, let the stack have it" is TCX_NEXT (-1, the same
 *     value as TC_ACT_UNSPEC, which goes on to the next clsact filter), so
 *     tc_policy, attached after this program on a pod's host veth (and, for
 *     the L7 proxy, on the node's own interfaces: docs/l7.md), judges the
 *     packet after the Service translation; with nothing after it the
 *     stack takes it as with TC_ACT_OK. Packets this program sends
 *     itself (TC_ACT_REDIRECT: replies of NodePort flows, masqueraded
 *     flows) do not reach tc_policy: replies need no egress check, and
 *     packets of masqueraded flows are judged here (fp_masq_policy) with
 *     the same code tc_policy runs.
 *
 * Not handled here: direct (not balanced) connections are not tracked. One
 * that reuses a closed flow's tuple while the backend holds it in TIME_WAIT
 * may see its SYN refused by PAWS; the backend's challenge ACK then matches
 * the closed flow's REPLY entry and is translated like that flow's late
 * packets, so the client retries after its RTO instead of at once. Its
 * SYN-ACK is never translated (ct.h, stale entries).
 * ICMP errors the node itself sends about a DNATed packet
 * (frag needed towards the backend, TTL exceeded) leave through egress,
 * which this program does not see, so the client gets them untranslated.
 * A masqueraded packet too large for the interface towards its backend is
 * dropped and counted (DROP_NO_ROUTE), with no frag-needed to the client.
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
#include "service.h"
#include "snat.h"
#include "drop.h"
#include "egress.h"
#include "icmp.h"
#include "reject.h"
#include "policy.h"

/* Not a verdict: the stage did not match, try the next one. */
#define FP_NEXT (-100)
/* Not verdicts of fp_new: the flow's ct entries could not be written
 * (FP_FOLLOW), or a flow with SNAT has them, and its packet is still to be
 * sent (FP_CREATED); see fp_forward. */
#define FP_FOLLOW (-101)
#define FP_CREATED (-102)
/* Not verdicts either, within fp_new: the flow is to be only DNATed
 * (FP_DNAT), or its tuple at the backend is another flow's (FP_CLASH). */
#define FP_DNAT (-103)
#define FP_CLASH (-104)

/*
 * The role of the interface this instance is attached to (FP_ROLE_*). The
 * loader sets it per instance before loading, so the role can never
 * disagree with the attachment and the verifier prunes the other role's
 * code; see internal/datapath/loader.go for the choice.
 */
volatile const __u32 fp_iface_role = FP_ROLE_INTERNAL;

/*
 * Whether this instance checks pods' source addresses (fp_spoofed). Only
 * the NetworkPolicy side of the agent writes the addresses (fp_endpoints),
 * so the loader clears it when the agent runs without policy (and so
 * without the L7 proxy, which needs policy): the check could never fire
 * there, and every packet on an internal interface would pay a lookup for
 * nothing, about a seventh of what a packet to no service costs here
 * (docs/benchmarks/datapath.md). On unless the loader says otherwise.
 */
volatile const __u32 fp_source_check = 1;

/* fp_send redirects a rewritten packet as fp_fib said (snat.h). */
static __always_inline int fp_send(struct __sk_buff *skb, const struct fp_pkt *p,
				   const struct fp_nexthop *nh)
{
	int ret = fp_redirect(skb, p, nh);

	if (ret < 0)
		return fp_drop(skb, p, FP_METRIC_DROP_MALFORMED);
	return ret;
}

/*
 * fp_reply_nodeport sends a reverse-NATed reply of a NodePort flow, whose
 * source (saddr) is now one of the node's own addresses, to daddr where the
 * FIB says: the stack would drop it as a martian (fib_validate_source). A
 * destination the FIB does not forward to (the node itself) is left to the
 * stack, as before; one it cannot reach is dropped and counted.
 */
static __always_inline int fp_reply_nodeport(struct __sk_buff *skb, const struct fp_pkt *p,
					     __be32 saddr, __be32 daddr)
{
	struct fp_nexthop nh;
	int rc;

	if (p->ttl <= 1)
		return TC_ACT_OK;
	rc = fp_fib(skb, p, saddr, daddr, p->dport, &nh);
	if (rc == BPF_FIB_LKUP_RET_NOT_FWDED)
		return TC_ACT_OK;
	if (!fp_fib_ok(rc))
		return fp_drop(skb, p, FP_METRIC_DROP_NO_ROUTE);
	return fp_send(skb, p, &nh);
}

/* fp_ts_in gives the client back its own timestamp in the TSecr of reply p
 * of a flow whose timestamps are translated (fp_ts_out). */
static __always_inline int fp_ts_in(struct __sk_buff *skb, const struct fp_pkt *p,
				    const struct fp_ct_entry *e)
{
	__u32 off;

	if (!e->ts_delta || p->proto != IPPROTO_TCP || !(p->tcp_flags & FP_TCP_ACK))
		return 0;
	off = fp_tcp_ts_off(skb, p->l4_off);
	if (!off)
		return 0;
	return fp_tcp_ts_shift(skb, p, off + 4, -e->ts_delta);
}

/*
 * fp_reply reverse-NATs a reply of a balanced flow: backend -> client. The
 * REPLY entry holds the frontend the client used (nat_addr), so a reply
 * needs no fp_rev_nat lookup: one cold hash lookup less per reply packet
 * with many services. A flow outlives its service's deletion in both
 * directions alike (its FORWARD entry keeps sending to the backend), as
 * conntrack's NAT does for kube-proxy, until the entries age out.
 */
static __always_inline int fp_reply(struct __sk_buff *skb, const struct fp_pkt *p)
{
	struct fp_ct_key key;
	struct fp_ct_entry *e;
	__be32 daddr = p->daddr;
	__be32 vip;
	__u16 vport;

	fp_ct_key_v4(&key, p->saddr, p->daddr, p->sport, p->dport, p->proto, FP_CT_REPLY);
	e = bpf_map_lookup_elem(&fp_ct, &key);
	if (!e || fp_ct_reply_stale(&key, e, p))
		return FP_NEXT;
	/* No frontend (rev_nat_id 0): a masqueraded egress flow (egress.h). */
	if (!e->rev_nat_id)
		return fp_egress_reply(skb, p, e);
	if (!fp_addr_is_v4(&e->nat_addr))
		return TC_ACT_OK;
	vip = e->nat_addr.w[3];
	vport = e->nat_port;
	/* SNAT: the destination goes back to the client (its port at least). */
	if (e->flags & FP_CT_F_SNAT) {
		if (!fp_addr_is_v4(&e->snat_addr) ||
		    fp_nat(skb, p, FP_DST, e->snat_addr.w[3], bpf_htons(e->snat_port)) < 0)
			return fp_drop(skb, p, FP_METRIC_DROP_MALFORMED);
		daddr = e->snat_addr.w[3];
	}
	if (fp_nat(skb, p, FP_SRC, vip, bpf_htons(vport)) < 0 || fp_ts_in(skb, p, e) < 0)
		return fp_drop(skb, p, FP_METRIC_DROP_MALFORMED);
	fp_ct_touch(e, p, FP_CT_F_SEEN_REPLY);
	fp_metric_add(FP_METRIC_REPLY_REVNAT, p->len);
	if (e->flags & FP_CT_F_NODEPORT)
		return fp_reply_nodeport(skb, p, vip, daddr);
	return TC_ACT_OK;
}

/*
 * fp_masq_policy judges a packet of a masqueraded flow a pod sends against
 * the pod's policy (bpf/include/policy.h), as seen before the masquerade:
 * from the pod to the backend or external peer. This program sends these
 * packets itself, so tc_policy, after it on the pod's veth, never sees
 * them. 1: pass.
 */
static __always_inline int fp_masq_policy(struct __sk_buff *skb, const struct fp_pkt *p,
					  const struct fp_ct_entry *e)
{
	struct fp_pflow f = {
		.saddr = p->saddr, .daddr = e->nat_addr.w[3],
		.sport = bpf_ntohs(p->sport), .dport = e->nat_port, .proto = p->proto,
	};
	struct fp_endpoint *ep = fp_policy_enforced(skb->ifindex);

	return !ep || fp_policy_judge(ep, &f, p->tcp_flags, FP_DIR_EGRESS);
}

/*
 * fp_established_masq sends a packet of a masqueraded flow to the flow's
 * backend from the flow's masquerade address and port, counted as metric.
 * A packet about to expire goes to the stack untranslated, which answers
 * time exceeded.
 */
static __always_inline int fp_established_masq(struct __sk_buff *skb, const struct fp_pkt *p,
					       struct fp_ct_entry *e, __u32 metric)
{
	struct fp_nexthop nh;
	int rc;

	if (!fp_addr_is_v4(&e->snat_addr))
		return fp_drop(skb, p, FP_METRIC_DROP_MALFORMED);
	if (p->ttl <= 1)
		return TC_ACT_OK;
	if (fp_iface_role == FP_ROLE_INTERNAL && !fp_masq_policy(skb, p, e))
		return TC_ACT_SHOT;
	rc = fp_fib(skb, p, e->snat_addr.w[3], e->nat_addr.w[3], bpf_htons(e->nat_port), &nh);
	if (!fp_fib_ok(rc))
		return fp_drop(skb, p, FP_METRIC_DROP_NO_ROUTE);
	if (fp_nat(skb, p, FP_DST, e->nat_addr.w[3], bpf_htons(e->nat_port)) < 0 ||
	    fp_nat(skb, p, FP_SRC, e->snat_addr.w[3], bpf_htons(e->snat_port)) < 0)
		return fp_drop(skb, p, FP_METRIC_DROP_MALFORMED);
	fp_ct_touch(e, p, 0);
	fp_metric_add(metric, p->len);
	return fp_send(skb, p, &nh);
}

/*
 * fp_ts_out translates the timestamp of client packet p of flow e (not
 * masqueraded) by the flow's delta, and once the flow is closing records
 * it, as sent, in the REPLY entry (fp_ct_ts_note): a later flow may take
 * the tuple over (ct.h). Other packets cost two tests.
 */
static __always_inline int fp_ts_out(struct __sk_buff *skb, const struct fp_pkt *p,
				     const struct fp_ct_entry *e)
{
	int note = !(e->flags & FP_CT_F_SNAT) &&
		   ((p->tcp_flags & FP_TCP_FIN) || (e->flags & FP_CT_F_CLOSING));
	__u32 off, tsval;

	if (p->proto != IPPROTO_TCP || (!e->ts_delta && !note))
		return 0;
	off = fp_tcp_ts_off(skb, p->l4_off);
	if (!off)
		return 0;
	if (e->ts_delta && fp_tcp_ts_shift(skb, p, off, e->ts_delta) < 0)
		return -1;
	if (note && fp_tcp_ts_get(skb, off, &tsval) == 0)
		fp_ct_ts_note(p, e, tsval);
	return 0;
}

/*
 * fp_established sends a packet of a tracked flow to the flow's backend,
 * from the port of its own when its tuple clashed (ct.h).
 */
static __always_inline int fp_established(struct __sk_buff *skb, const struct fp_pkt *p,
					  struct fp_ct_entry *e, __u32 metric)
{
	if (!fp_addr_is_v4(&e->nat_addr))
		return fp_drop(skb, p, FP_METRIC_DROP_BACKEND_GONE);
	if (fp_ct_masq(e->flags))
		return fp_established_masq(skb, p, e, metric);
	if ((e->flags & FP_CT_F_SNAT_PORT) &&
	    fp_nat_port(skb, p, FP_SRC, p->sport, bpf_htons(e->snat_port)) < 0)
		return fp_drop(skb, p, FP_METRIC_DROP_MALFORMED);
	if (fp_ts_out(skb, p, e) < 0)
		return fp_drop(skb, p, FP_METRIC_DROP_MALFORMED);
	if (fp_nat(skb, p, FP_DST, e->nat_addr.w[3], bpf_htons(e->nat_port)) < 0)
		return fp_drop(skb, p, FP_METRIC_DROP_MALFORMED);
	fp_ct_touch(e, p, 0);
	fp_metric_add(metric, p->len);
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
 * FP_NEXT with c filled, or a verdict: pass
 * (not a service), reject (no backends) or drop (the slot is missing or
 * names a backend that does not exist).
 */
static __always_inline int fp_pick(struct __sk_buff *skb, const struct fp_pkt *p,
				   struct fp_choice *c)
{
	struct fp_affinity_key ak;
	struct fp_svc_key sk = {};
	struct fp_svc_val *svc, *slot;
	struct fp_backend *be;
	__u32 backend_id;

	fp_addr_set_v4(&sk.addr, p->daddr);
	sk.port = bpf_ntohs(p->dport);
	sk.proto = p->proto;
	svc = fp_svc_lookup(&sk, fp_iface_role == FP_ROLE_INTERNAL);
	if (!svc)
		return TC_ACT_OK;
	/* Outside loadBalancerSourceRanges: dropped, as kube-proxy does. */
	if (!fp_source_allowed(svc, p->saddr))
		return fp_drop_svc(skb, p, FP_METRIC_DROP_SOURCE_RANGE, svc->rev_nat_id);
	if (svc->count == 0) {
		fp_metric_add(FP_METRIC_DROP_NO_BACKEND, p->len);
		fp_drop_event(skb, p, FP_REASON_LB_NO_BACKEND, svc->rev_nat_id);
		return fp_reject(skb, p);
	}
	c->rev_nat_id = svc->rev_nat_id;
	c->svc_flags = svc->flags;
	c->affinity = fp_affinity_on(svc);
	fp_affinity_key_tc(&ak, p, c->rev_nat_id);
	slot = fp_slot_pick(&sk, svc, &ak);
	if (!slot)
		return fp_drop(skb, p, FP_METRIC_DROP_BACKEND_GONE);
	backend_id = slot->backend_id;
	be = bpf_map_lookup_elem(&fp_backends, &backend_id);
	/* An IPv6 backend behind an IPv4 frontend would need NAT46. */
	if (!be || !fp_addr_is_v4(&be->addr))
		return fp_drop(skb, p, FP_METRIC_DROP_BACKEND_GONE);
	c->addr = be->addr.w[3];
	c->port = be->port;
	c->backend_id = backend_id;
	c->slot = sk.slot;
	return FP_NEXT;
}

/*
 * fp_remember records c as its client's last choice, when the service has
 * session affinity. The key is built again rather than kept from fp_pick:
 * stack is what limits this program.
 */
static __always_inline void fp_remember(const struct fp_pkt *p, const struct fp_choice *c)
{
	struct fp_affinity_key ak;

	if (!c->affinity)
		return;
	fp_affinity_key_tc(&ak, p, c->rev_nat_id);
	fp_affinity_remember(&ak, c->backend_id, c->slot);
}

/*
 * fp_masq_config returns the node's settings when new flow c of p must be
 * masqueraded (snat.h): hairpin, or from an external interface to a service
 * without FP_SVC_F_EXT_LOCAL. NULL when it need not be, or cannot be as no
 * masquerade address is configured: then it is only DNATed, as before
 * masquerading existed.
 */
static __always_inline const struct fp_config *fp_masq_config(const struct fp_pkt *p,
							      const struct fp_choice *c)
{
	const struct fp_config *cfg;

	if (!c->egress && c->addr != p->saddr &&
	    (fp_iface_role != FP_ROLE_EXTERNAL || (c->svc_flags & FP_SVC_F_EXT_LOCAL)))
		return NULL;
	cfg = fp_config_get();
	if (!cfg || !fp_addr_is_v4(&cfg->masq_addr))
		return NULL;
	return cfg;
}

/*
 * fp_masq_route says whether new flow c of p, to be masqueraded, can be. The
 * FIB is asked first: a flow whose packets cannot leave is not recorded, and
 * a backend the FIB does not forward to (a host-network backend on this
 * node, or one without any route) is only DNATed (FP_DNAT) and left to the
 * stack, like kube-proxy, whose MASQUERADE in POSTROUTING never sees locally
 * delivered packets. FP_NEXT: masquerade; otherwise a verdict. fp_forward
 * sends the packet once the entries are written, after this function's
 * stack is free again (the 512 bytes of BPF stack are the limit of this
 * program), at the price of a second FIB lookup for a flow's first packet.
 */
static __always_inline int fp_masq_route(struct __sk_buff *skb, const struct fp_pkt *p,
					 const struct fp_choice *c, const struct fp_config *cfg)
{
	struct fp_nexthop nh;
	int rc;

	if (p->ttl <= 1)
		return TC_ACT_OK;
	rc = fp_fib(skb, p, cfg->masq_addr.w[3], c->addr, bpf_htons(c->port), &nh);
	if (rc == BPF_FIB_LKUP_RET_NOT_FWDED)
		return FP_DNAT;
	if (!fp_fib_ok(rc))
		return fp_drop(skb, p, FP_METRIC_DROP_NO_ROUTE);
	return FP_NEXT;
}

/*
 * fp_new_dnat starts a flow that is only DNATed. It returns a verdict,
 * FP_FOLLOW with *err set when the entries are not written, FP_CLASH
 * when another flow holds the flow's tuple at the backend, or FP_CREATED
 * when the flow took a closed flow's tuple over with a timestamp delta
 * (fp_ct_create): fp_forward sends it, translated like its later packets.
 */
static __always_inline int fp_new_dnat(struct __sk_buff *skb, const struct fp_pkt *p,
				       const struct fp_choice *c, __u64 flag, long *err)
{
	*err = fp_ct_create(skb, p, c, flag);
	if (*err == -EADDRINUSE)
		return FP_CLASH;
	if (*err == FP_CT_TAKEN) {
		*err = 0;
		fp_remember(p, c);
		return FP_CREATED;
	}
	if (*err)
		return FP_FOLLOW;
	/* Only once the flow is ours: a CPU that lost the race above follows
	 * the winner, which remembered its own choice. */
	fp_remember(p, c);
	if (fp_nat(skb, p, FP_DST, c->addr, bpf_htons(c->port)) < 0)
		return fp_drop(skb, p, FP_METRIC_DROP_MALFORMED);
	fp_metric_add(FP_METRIC_FORWARD_NEW, p->len);
	return TC_ACT_OK;
}

/*
 * fp_new balances the first packet of a flow (or of a reopened one, whose
 * old FORWARD entry is old). Three kinds of flow come out of it:
 *   - masqueraded (fp_masq_config, fp_masq_route);
 *   - only DNATed (fp_new_dnat), with translated TCP timestamps when it
 *     took over a closed flow's tuple (ct.h);
 *   - DNATed with a source port of its own, when another flow holds the
 *     only-DNATed flow's tuple at the backend (FP_CLASH, ct.h): from the
 *     masquerade range or the clash ports (snat.h), the client's address kept. Without a free port the
 *     packet is dropped (FP_FOLLOW with -EADDRNOTAVAIL), rather than sent
 *     with a tuple whose SYN the backend would drop, or that would take
 *     another flow's replies.
 * The two kinds with SNAT share one inlined fp_ct_create_snat: the
 * verifier's work grows with every copy. It returns a verdict, FP_CREATED
 * once a flow with SNAT or translated timestamps has its entries
 * (fp_forward sends the packet), or FP_FOLLOW with *err set.
 */
static __always_inline int fp_new(struct __sk_buff *skb, const struct fp_pkt *p,
				  const struct fp_ct_entry *old, long *err)
{
	const struct fp_config *cfg;
	struct fp_choice c = {};
	__u64 flag = BPF_NOEXIST;
	__u16 snat_flags = 0;
	__be32 saddr;
	int ret;

	if (old) {
		fp_ct_forget_snat(old, p->proto);
		flag = BPF_ANY;
	}
	ret = fp_pick(skb, p, &c);
	/* fp_pick passes (TC_ACT_OK) only packets to no service: a pod's flow
	 * among them that leaves the cluster is masqueraded (egress.h). */
	if (ret == TC_ACT_OK && fp_iface_role == FP_ROLE_INTERNAL && fp_egress_pick(p, &c))
		ret = FP_NEXT;
	if (ret != FP_NEXT)
		return ret;
	cfg = fp_masq_config(p, &c);
	ret = cfg ? fp_masq_route(skb, p, &c, cfg) : FP_DNAT;
	/* Egress to a local or unroutable address: the stack's business. */
	if (ret == FP_DNAT && c.egress)
		return TC_ACT_OK;
	if (ret == FP_DNAT) {
		ret = fp_new_dnat(skb, p, &c, flag, err);
		if (ret != FP_CLASH)
			return ret;
		cfg = fp_config_get();
		if (!cfg) {
			*err = -EADDRNOTAVAIL;
			return FP_FOLLOW;
		}
		saddr = p->saddr;
		snat_flags = FP_CT_F_SNAT_PORT;
	} else if (ret == FP_NEXT) {
		saddr = cfg->masq_addr.w[3];
	} else {
		return ret;
	}
	*err = fp_ct_create_snat(p, &c, cfg, saddr, flag, snat_flags);
	if (*err)
		return FP_FOLLOW;
	fp_remember(p, &c);
	return FP_CREATED;
}

/*
 * fp_forward handles a packet that is not a reply: tracked flow or new one.
 * A new flow whose FORWARD entry another CPU wrote first (-EEXIST) follows
 * that CPU's choice. A new flow with SNAT (masqueraded, or with a port of
 * its own) has its first packet sent like its later ones, by
 * fp_established, which is inlined at this one place only.
 */
static __always_inline int fp_forward(struct __sk_buff *skb, const struct fp_pkt *p)
{
	__u32 metric = FP_METRIC_FORWARD_CT;
	struct fp_ct_entry *e;
	long err = 0;
	int ret;

	e = fp_ct_fwd_entry(p);
	if (!e || fp_ct_reopen(e, p)) {
		ret = fp_new(skb, p, e, &err);
		if (ret == FP_FOLLOW && err != -EEXIST)
			return fp_drop(skb, p, err == -EADDRNOTAVAIL ? FP_METRIC_DROP_SNAT_NO_PORT
							       : FP_METRIC_DROP_CT_FULL);
		if (ret != FP_FOLLOW && ret != FP_CREATED)
			return ret;
		if (ret == FP_CREATED)
			metric = FP_METRIC_FORWARD_NEW;
		e = fp_ct_fwd_entry(p);
		if (!e)
			return fp_drop(skb, p, FP_METRIC_DROP_CT_FULL);
	} else if (fp_tcp_bare_syn(p)) {
		/* A SYN sent again: its SYN-ACK may have been lost for want of
		 * the REPLY entry. */
		fp_ct_heal_reply(p, e);
	}
	return fp_established(skb, p, e, metric);
}

/*
 * fp_icmp_to_backend_masq forwards an error the client sent about a reply of
 * a masqueraded flow (e entry FORWARD): besides the VIP, the quoted client
 * becomes the masquerade address and port, and so does the outer source, so
 * the error leaves like the flow's packets do. Only an error addressed to
 * the VIP is taken; others pass untouched.
 */
static __always_inline int fp_icmp_to_backend_masq(struct __sk_buff *skb, const struct fp_pkt *p,
						   struct fp_inner *in, const struct fp_ct_entry *e)
{
	struct fp_nexthop nh;
	int rc;

	if (!fp_addr_is_v4(&e->snat_addr) || p->daddr != in->saddr || p->ttl <= 1)
		return TC_ACT_OK;
	rc = fp_fib(skb, p, e->snat_addr.w[3], e->nat_addr.w[3], 0, &nh);
	if (!fp_fib_ok(rc))
		return fp_drop(skb, p, FP_METRIC_DROP_NO_ROUTE);
	if (fp_icmp_xlate(skb, p, in, FP_SRC, e->nat_addr.w[3], bpf_htons(e->nat_port)) < 0 ||
	    fp_icmp_xlate(skb, p, in, FP_DST, e->snat_addr.w[3], bpf_htons(e->snat_port)) < 0)
		return fp_drop(skb, p, FP_METRIC_DROP_MALFORMED);
	fp_metric_add(FP_METRIC_FORWARD_CT, p->len);
	return fp_send(skb, p, &nh);
}

/*
 * fp_icmp translates an ICMP error about a balanced flow. Either it comes
 * from the backend's side and quotes a client -> backend packet (REPLY entry
 * of the swapped quote: back to the VIP), or it comes from the client's side
 * and quotes a VIP -> client reply (FORWARD entry of the swapped quote: on to
 * the backend, so PMTU discovery works for backends too). For a flow with
 * SNAT the quote's other end (and the outer address that is the same host)
 * is translated between masquerade address (or port of its own) and client
 * as well.
 */
static __always_inline int fp_icmp(struct __sk_buff *skb, const struct fp_pkt *p)
{
	struct fp_inner in = {};
	struct fp_ct_key key;
	struct fp_ct_entry *e;

	if (!fp_icmp_is_error(p->icmp_type) || fp_icmp_inner(skb, p, &in) < 0)
		return TC_ACT_OK;

	fp_ct_key_v4(&key, in.daddr, in.saddr, in.dport, in.sport, in.proto, FP_CT_REPLY);
	e = bpf_map_lookup_elem(&fp_ct, &key);
	if (e) {
		/* The frontend is the REPLY entry's, as for the flow's replies
		 * (fp_reply); rev_nat_id 0 is an egress flow's, not handled here. */
		if (!e->rev_nat_id || !fp_addr_is_v4(&e->nat_addr))
			return TC_ACT_OK;
		if (fp_icmp_xlate(skb, p, &in, FP_DST, e->nat_addr.w[3], bpf_htons(e->nat_port)) < 0)
			return fp_drop(skb, p, FP_METRIC_DROP_MALFORMED);
		if ((e->flags & FP_CT_F_SNAT) &&
		    (!fp_addr_is_v4(&e->snat_addr) ||
		     fp_icmp_xlate(skb, p, &in, FP_SRC, e->snat_addr.w[3], bpf_htons(e->snat_port)) < 0))
			return fp_drop(skb, p, FP_METRIC_DROP_MALFORMED);
		fp_metric_add(FP_METRIC_ICMP_ERR_REVNAT, p->len);
		/* From the backend itself, its source is now the node's NodePort
		 * address: sent like the flow's replies (fp_reply_nodeport). */
		if ((e->flags & FP_CT_F_NODEPORT) && p->saddr == in.daddr)
			return fp_reply_nodeport(skb, p, e->nat_addr.w[3],
						 (e->flags & FP_CT_F_SNAT) ? e->snat_addr.w[3] : p->daddr);
		return TC_ACT_OK;
	}

	key.dir = FP_CT_FORWARD;
	e = bpf_map_lookup_elem(&fp_ct, &key);
	if (!e || !fp_addr_is_v4(&e->nat_addr))
		return TC_ACT_OK;
	if (fp_ct_masq(e->flags))
		return fp_icmp_to_backend_masq(skb, p, &in, e);
	if (fp_icmp_xlate(skb, p, &in, FP_SRC, e->nat_addr.w[3], bpf_htons(e->nat_port)) < 0 ||
	    ((e->flags & FP_CT_F_SNAT_PORT) &&
	     fp_icmp_xlate(skb, p, &in, FP_DST, e->snat_addr.w[3], bpf_htons(e->snat_port)) < 0))
		return fp_drop(skb, p, FP_METRIC_DROP_MALFORMED);
	fp_metric_add(FP_METRIC_FORWARD_CT, p->len);
	return TC_ACT_OK;
}

/*
 * fp_spoofed: an IPv4 packet a pod sends from an address that is not its
 * own (the endpoint's addr4, written by the agent). This instance, at the
 * pod's host veth TC ingress, is the first program to see it, and the only
 * one for masqueraded flows. With accept_local on the veth (the L7 proxy's
 * host clients, docs/l7.md) the node would take the node's own address as
 * source, so a pod could pose as the host to policy. Exempt: packets the
 * datapath turned around into the veth (FP_PROXY_MARK_HOST, fp_proxy_host
 * in tc_policy.c), which carry their client's source; a pod cannot set
 * that mark, as crossing the veth from its namespace scrubs skb->mark.
 * An endpoint without addr4 (not known yet) is not checked.
 */
static __always_inline int fp_spoofed(struct __sk_buff *skb, const struct fp_pkt *p)
{
	__u32 ifindex = skb->ifindex;
	struct fp_endpoint *ep;

	if (!fp_source_check || fp_iface_role != FP_ROLE_INTERNAL ||
	    (skb->mark & FP_PROXY_MARK_MASK) == FP_PROXY_MARK_HOST)
		return 0;
	ep = bpf_map_lookup_elem(&fp_endpoints, &ifindex);
	return ep && ep->addr4 && ep->addr4 != p->saddr;
}

static __always_inline int fp_lb(struct __sk_buff *skb)
{
	struct fp_pkt p = {};
	int ret, res = fp_parse(skb, &p);

	if (res == FP_PARSE_MALFORMED) {
		p.len = skb->len;
		return fp_drop(skb, &p, FP_METRIC_DROP_MALFORMED);
	}
	/* A protocol set: IPv4 (ARP, IPv6 and later fragments have none). */
	if (p.proto && fp_spoofed(skb, &p))
		return fp_drop(skb, &p, FP_METRIC_DROP_SPOOFED);
	if (res != FP_PARSE_OK)
		return TC_ACT_OK;
	if (p.proto == IPPROTO_ICMP)
		return fp_icmp(skb, &p);
	ret = fp_reply(skb, &p);
	if (ret != FP_NEXT)
		return ret;
	return fp_forward(skb, &p);
}

SEC("tc")
int fp_tc_lb(struct __sk_buff *skb)
{
	int ret = fp_lb(skb);

	return ret == TC_ACT_OK ? FP_TCX_NEXT : ret;
}

char __license[] SEC("license") = "Dual BSD/GPL";
