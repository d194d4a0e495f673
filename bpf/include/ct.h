/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Connection tracking of load-balanced flows (fp_ct). Each flow has two
 * entries, written together when the first packet is balanced:
 *   FORWARD client -> VIP:     nat = the backend, so the flow keeps it;
 *   REPLY   backend -> client: rev_nat_id, nat = the frontend (VIP:port),
 *                              so a REPLY entry names its FORWARD twin.
 * A masqueraded flow (FP_CT_F_SNAT, snat.h) has REPLY backend -> masquerade
 * address:port instead, and snat_addr/port name the client there.
 * Each entry ages on the packets of its own direction. The agent's GC must
 * delete the two as a pair, only once both have expired, or replies of a
 * quiet direction lose their reverse NAT.
 */
#ifndef FASTPATH_CT_H
#define FASTPATH_CT_H

#include <linux/errno.h>
#include "maps.h"
#include "pkt.h"

static __always_inline void fp_addr_set_v4(union fp_addr *a, __be32 ip)
{
	a->w[0] = 0;
	a->w[1] = 0;
	a->w[2] = bpf_htonl(0x0000ffff);
	a->w[3] = ip;
}

static __always_inline int fp_addr_is_v4(const union fp_addr *a)
{
	return a->w[0] == 0 && a->w[1] == 0 && a->w[2] == bpf_htonl(0x0000ffff);
}

/* fp_ct_key_v4 fills a key; ports come in network order, keys hold host order. */
static __always_inline void fp_ct_key_v4(struct fp_ct_key *k, __be32 saddr, __be32 daddr,
					 __be16 sport, __be16 dport, __u8 proto, __u8 dir)
{
	fp_addr_set_v4(&k->saddr, saddr);
	fp_addr_set_v4(&k->daddr, daddr);
	k->sport = bpf_ntohs(sport);
	k->dport = bpf_ntohs(dport);
	k->proto = proto;
	k->dir = dir;
	k->pad = 0;
}

/* fp_ct_flags returns an entry's flags after this packet. */
static __always_inline __u16 fp_ct_flags(__u16 flags, const struct fp_pkt *p)
{
	if (p->proto == IPPROTO_TCP && (p->tcp_flags & (FP_TCP_FIN | FP_TCP_RST)))
		flags |= FP_CT_F_CLOSING;
	return flags;
}

/*
 * fp_ct_lifetime says how long an entry lives after this packet. A SYN from
 * either side means the handshake is not done yet. A closing entry never gets
 * the long lifetime back; a reused tuple starts over with a SYN, which
 * re-balances (fp_ct_reopen).
 */
static __always_inline __u64 fp_ct_lifetime(const struct fp_pkt *p, __u16 flags)
{
	if (p->proto != IPPROTO_TCP)
		return FP_CT_LIFETIME_NONTCP * FP_NSEC_PER_SEC;
	if (flags & FP_CT_F_CLOSING)
		return FP_CT_LIFETIME_TCP_CLOSE * FP_NSEC_PER_SEC;
	if (p->tcp_flags & FP_TCP_SYN)
		return FP_CT_LIFETIME_TCP_SYN * FP_NSEC_PER_SEC;
	return FP_CT_LIFETIME_TCP * FP_NSEC_PER_SEC;
}

/* fp_ct_touch accounts one more packet to an entry and extends its life. */
static __always_inline void fp_ct_touch(struct fp_ct_entry *e, const struct fp_pkt *p, __u16 set)
{
	__u16 flags = fp_ct_flags(e->flags | set, p);

	/* Flags rarely change; a store only when they do. */
	if (flags != e->flags)
		e->flags = flags;
	e->expires = bpf_ktime_get_boot_ns() + fp_ct_lifetime(p, flags);
	__sync_fetch_and_add(&e->packets, 1);
	__sync_fetch_and_add(&e->bytes, p->len);
}

/*
 * fp_ct_reopen: a bare SYN on a closed or expired FORWARD entry is a new
 * connection that reuses the tuple (the GC may not have run yet); it is
 * balanced again instead of following a backend that may be gone.
 */
static __always_inline int fp_ct_reopen(const struct fp_ct_entry *e, const struct fp_pkt *p)
{
	if (p->proto != IPPROTO_TCP || (p->tcp_flags & (FP_TCP_SYN | FP_TCP_ACK)) != FP_TCP_SYN)
		return 0;
	return (e->flags & FP_CT_F_CLOSING) || e->expires < bpf_ktime_get_boot_ns();
}

/* A backend chosen for a new flow. */
struct fp_choice {
	__be32 addr; /* IPv4: checked when picked */
	__u16 port;  /* host order */
	__u16 slot; /* the service slot that named the backend */
	__u32 backend_id;
	__u32 rev_nat_id;
	__u16 svc_flags; /* the service entry's FP_SVC_F_* */
	__u8 affinity;   /* the service has session affinity: remember the choice */
};

/* fp_ct_key_fwd fills the FORWARD key of p's flow. */
static __always_inline void fp_ct_key_fwd(struct fp_ct_key *k, const struct fp_pkt *p)
{
	fp_ct_key_v4(k, p->saddr, p->daddr, p->sport, p->dport, p->proto, FP_CT_FORWARD);
}

/*
 * fp_ct_fwd_entry returns the FORWARD entry of p's flow, or NULL. The key
 * lives in this function only: on the paths that create flows, every
 * 40-byte key less counts against the 512 bytes of BPF stack.
 */
static __always_inline struct fp_ct_entry *fp_ct_fwd_entry(const struct fp_pkt *p)
{
	struct fp_ct_key key;

	fp_ct_key_fwd(&key, p);
	return bpf_map_lookup_elem(&fp_ct, &key);
}

/*
 * fp_ct_create writes both entries of a new flow. FORWARD goes in with
 * fwd_flag: BPF_NOEXIST normally, so that when two CPUs balance the first
 * packets of one flow at once, the loser gets -EEXIST and follows the
 * winner's backend; BPF_ANY when it replaces a reopened flow's entry. REPLY
 * is overwritten: a new flow owns the backend's view of the tuple. If REPLY
 * cannot be written, FORWARD is removed again, as a flow whose replies would
 * not be reverse-NATed is worse than a dropped first packet. One key buffer
 * serves both directions, for stack's sake.
 */
static __always_inline int fp_ct_create(const struct fp_pkt *p, const struct fp_choice *c,
					__u64 fwd_flag)
{
	struct fp_ct_entry e = {};
	struct fp_ct_key key;
	long err;

	fp_addr_set_v4(&e.nat_addr, c->addr);
	e.nat_port = c->port;
	e.flags = fp_ct_flags(0, p);
	e.rev_nat_id = c->rev_nat_id;
	e.backend_id = c->backend_id;
	e.expires = bpf_ktime_get_boot_ns() + fp_ct_lifetime(p, e.flags);
	e.packets = 1;
	e.bytes = p->len;
	fp_ct_key_fwd(&key, p);
	err = bpf_map_update_elem(&fp_ct, &key, &e, fwd_flag);
	if (err)
		return err;

	fp_ct_key_v4(&key, c->addr, p->saddr, bpf_htons(c->port), p->sport, p->proto,
		     FP_CT_REPLY);
	fp_addr_set_v4(&e.nat_addr, p->daddr);
	e.nat_port = bpf_ntohs(p->dport);
	e.flags = 0;
	e.packets = 0;
	e.bytes = 0;
	err = bpf_map_update_elem(&fp_ct, &key, &e, BPF_ANY);
	if (err) {
		fp_ct_key_fwd(&key, p);
		bpf_map_delete_elem(&fp_ct, &key);
	}
	return err;
}

/*
 * fp_ct_forget_snat deletes the REPLY entry of a masqueraded FORWARD entry
 * that is about to be replaced (a reopened tuple), so its port is free at
 * once instead of when the GC finds both expired.
 */
static __always_inline void fp_ct_forget_snat(const struct fp_ct_entry *e, __u8 proto)
{
	struct fp_ct_key rkey;

	if (!(e->flags & FP_CT_F_SNAT))
		return;
	fp_ct_key_v4(&rkey, e->nat_addr.w[3], e->snat_addr.w[3], bpf_htons(e->nat_port),
		     bpf_htons(e->snat_port), proto, FP_CT_REPLY);
	bpf_map_delete_elem(&fp_ct, &rkey);
}

#endif /* FASTPATH_CT_H */
