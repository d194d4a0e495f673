/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Masquerade of pod traffic leaving the cluster (--cluster-cidr), as
 * ip-masq-agent or Cilium's BPF masquerade: a new TCP or UDP flow that
 * arrives on an internal interface (from a pod), comes from an address in
 * fp_no_masq and goes to no Service and to an address outside fp_no_masq
 * leaves with the node's masquerade address and a port of its own. It is
 * the masqueraded-flow path of snat.h with the destination itself as the
 * "backend": the same port search, the same FIB redirect, and replies
 * found by their REPLY entry on whichever interface they come back. Its ct
 * entries have rev_nat_id 0 (no frontend): a reply gets only its
 * destination translated back to the pod.
 *
 * Not masqueraded: ICMP (echo would need its id translated) and SCTP. Not
 * told apart: a UDP reply a pod sends to a client outside the cluster that
 * reached it untranslated and untracked (no Service on this node balanced
 * it) is masqueraded like a new flow.
 */
#ifndef FASTPATH_EGRESS_H
#define FASTPATH_EGRESS_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "addr.h"
#include "maps.h"
#include "pkt.h"
#include "ct.h"
#include "drop.h"
#include "snat.h"
#include "metrics.h"
#include "nat.h"

/*
 * fp_no_masq's values: what an address inside the prefix is. A flow is
 * masqueraded only from a pod (FP_NO_MASQ_CLUSTER, written from
 * --cluster-cidr) to an address in no prefix. Node addresses
 * (FP_NO_MASQ_NODE, written by the routing reconciler) are not masqueraded
 * to: a pod's packet to another node's address is most often the reply of
 * a NodePort flow that node masqueraded, which it must find untouched.
 */
#define FP_NO_MASQ_CLUSTER 1
#define FP_NO_MASQ_NODE 2

static __always_inline __u8 fp_no_masq_kind(__be32 addr)
{
	struct fp_cidr_key key = {.prefixlen = 128};
	__u8 *kind;

	fp_addr_set_v4(&key.addr, addr);
	kind = bpf_map_lookup_elem(&fp_no_masq, &key);
	return kind ? *kind : 0;
}

/*
 * fp_egress_pick fills c for p, a packet to no Service, when its flow must
 * be masqueraded, and returns whether it must. Only a flow's first packet
 * starts one: a TCP SYN without ACK (a SYN-ACK answers a connection from
 * outside, which must leave as it came), or any UDP datagram. Later packets
 * find the flow's ct entries before they get here.
 */
static __always_inline int fp_egress_pick(const struct fp_pkt *p, struct fp_choice *c)
{
	const struct fp_config *cfg;

	if (p->proto == IPPROTO_TCP) {
		if ((p->tcp_flags & (FP_TCP_SYN | FP_TCP_ACK)) != FP_TCP_SYN)
			return 0;
	} else if (p->proto != IPPROTO_UDP) {
		return 0;
	}
	cfg = fp_config_get();
	if (!cfg || !(cfg->flags & FP_CONFIG_F_EGRESS_MASQ) ||
	    fp_no_masq_kind(p->saddr) != FP_NO_MASQ_CLUSTER || fp_no_masq_kind(p->daddr) != 0)
		return 0;
	c->addr = p->daddr;
	c->port = bpf_ntohs(p->dport);
	c->egress = 1;
	return 1;
}

/*
 * fp_egress_reply translates a reply of a masqueraded egress flow (REPLY
 * entry e, rev_nat_id 0): its destination goes back to the pod; its source,
 * the outside address the pod talked to, stays.
 */
static __always_inline int fp_egress_reply(struct __sk_buff *skb, const struct fp_pkt *p,
					   struct fp_ct_entry *e)
{
	if (!(e->flags & FP_CT_F_SNAT) || !fp_addr_is_v4(&e->snat_addr) ||
	    fp_nat(skb, p, FP_DST, e->snat_addr.w[3], bpf_htons(e->snat_port)) < 0) {
		return fp_drop(skb, p, FP_METRIC_DROP_MALFORMED);
	}
	fp_ct_touch(e, p, FP_CT_F_SEEN_REPLY);
	fp_metric_add(FP_METRIC_REPLY_REVNAT, p->len);
	return TC_ACT_OK;
}

#endif /* FASTPATH_EGRESS_H */
