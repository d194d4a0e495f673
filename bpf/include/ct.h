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
 *
 * Tuple clashes. Services share backends, so client:p -> VIP-a and a later
 * client:p -> VIP-b can both become client:p -> backend:bp, which the
 * backend may still hold, in TIME_WAIT after the first flow or even open.
 * The client's TCP timestamps are offset per four-tuple (Linux 6.18), so the
 * backend drops the second SYN as old (PAWS), and the client only gets
 * through after a retransmission; both flows would also want one REPLY
 * entry. To see the backend's TIME_WAIT, the REPLY entry of a closed flow
 * stays for that long (FP_CT_LIFETIME_TCP_TIME_WAIT, fp_ct_lifetime) as a
 * tombstone.
 *
 * Timestamp translation. A direct client reusing its port reuses the same
 * four-tuple, whose timestamps only grow, and the backend's TIME_WAIT
 * takes its SYN and reopens the tuple (tcp_timewait_state_process: not
 * PAWS-rejected, and a TSval later than the last one it saw). A flow
 * through another VIP can do the same if the backend sees timestamps that
 * continue the closed flow's, so that is what it gets: the closed flow's
 * client packets, once it is closing, leave their TSval as sent in its
 * REPLY entry (ts_last, FP_CT_F_TS; only then, so established packets
 * parse no options), and a SYN that finds such a tombstone of a flow that
 * is done takes the tuple over with the client's own port
 * (fp_ct_takeover). When its TSval is not later than ts_last, the flow
 * gets a delta that puts it one past: added to every TSval towards the
 * backend, taken from every TSecr back, so each end sees its own clock.
 * The backend's own timestamps are untouched, as is its RTT estimate.
 * Why not a port of its own for every clash: each such port stays held
 * through the backend's TIME_WAIT (60 s), which caps a client at a few
 * hundred clashing flows a second per backend; the benchmark's single
 * client clashes far more often than that. The same connection reopened
 * after a translated flow needs a delta too (the backend saw shifted
 * timestamps), so the takeover also applies to a flow's own tuple.
 * What keeps a port of its own, like Linux NAT resolves clashes (address
 * kept, port from the masquerade range or the clash ports, FP_CT_F_SNAT |
 * FP_CT_F_SNAT_PORT, fp_ct_clash, snat.h): a clash with a live flow (two
 * flows cannot share one tuple), a SYN without timestamps (nothing to
 * continue), and a tombstone without a recorded timestamp (a flow closed
 * without one, or by an older datapath).
 *
 * Stale entries. A REPLY entry that outlived its flow must not translate
 * the packets of a new, direct connection that reuses the tuple: a SYN-ACK,
 * or any packet on an expired entry, is reverse-NATed only while the flow
 * is open (fp_ct_twin_state); otherwise the pair is deleted and the packet
 * passes as if it had never been there (fp_ct_reply_stale).
 */
#ifndef FASTPATH_CT_H
#define FASTPATH_CT_H

#include <linux/errno.h>
#include "addr.h"
#include "maps.h"
#include "pkt.h"
#include "tcpts.h"

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

/* fp_ct_masq says whether a flow is masqueraded: SNAT of address and port. */
static __always_inline int fp_ct_masq(__u16 flags)
{
	return (flags & (FP_CT_F_SNAT | FP_CT_F_SNAT_PORT)) == FP_CT_F_SNAT;
}

/*
 * fp_ct_lifetime says how long an entry lives after this packet. A SYN from
 * either side means the handshake is not done yet. A closing entry never gets
 * the long lifetime back; a reused tuple starts over with a SYN, which
 * re-balances (fp_ct_reopen).
 *
 * A closing REPLY entry (the only kind with FP_CT_F_SEEN_REPLY) is the
 * backend's tuple and stays through its TIME_WAIT, so that fp_ct_clash sees
 * it; its FORWARD twin needs no such wait. A masqueraded flow's REPLY entry
 * is what holds its port, and 60 s instead of 10 would cut the new flows a
 * backend can take from the masquerade range sixfold (4,536 ports by
 * default: 75 a second): it keeps the short lifetime, as before.
 */
static __always_inline __u64 fp_ct_lifetime(const struct fp_pkt *p, __u16 flags)
{
	if (p->proto != IPPROTO_TCP)
		return FP_CT_LIFETIME_NONTCP * FP_NSEC_PER_SEC;
	if (flags & FP_CT_F_CLOSING) {
		if ((flags & FP_CT_F_SEEN_REPLY) && !fp_ct_masq(flags))
			return FP_CT_LIFETIME_TCP_TIME_WAIT * FP_NSEC_PER_SEC;
		return FP_CT_LIFETIME_TCP_CLOSE * FP_NSEC_PER_SEC;
	}
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
	__u8 egress;     /* no service: a pod's flow leaving the cluster (egress.h) */
};

/* fp_ct_svc_flags are the ct flags a new flow gets from its service. */
static __always_inline __u16 fp_ct_svc_flags(const struct fp_choice *c)
{
	return (c->svc_flags & FP_SVC_F_NODEPORT) ? FP_CT_F_NODEPORT : 0;
}

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

/* What fp_ct_twin_state finds of a REPLY entry's flow. */
#define FP_TWIN_NONE 0 /* no FORWARD entry that is this REPLY entry's */
#define FP_TWIN_DONE 1 /* its FORWARD entry, of a flow that is no more */
#define FP_TWIN_OPEN 2 /* its FORWARD entry, of an open flow */

/*
 * fp_ct_twin_state looks at the flow of REPLY entry r, found at key: its
 * FORWARD entry (the twin) must exist and name r's tuple (the same backend
 * and translation: a tuple balanced again since leaves r over), and the
 * flow is open while that entry has not expired and the flow has not
 * closed in both directions. The agent's GC keeps an expired entry on the
 * same grounds (ctmap.GC). key is left holding the FORWARD key.
 * A global function, verified once for its two callers (inlined, it would
 * cost 2,000 to 3,000 more verified instructions); its 16 bytes of stack
 * add to the main frame's 384 only on its own call chain, far from 512.
 */
__attribute__((noinline)) int fp_ct_twin_state(struct fp_ct_key *key, const struct fp_ct_entry *r)
{
	struct fp_ct_entry *f;
	__u32 baddr, daddr;
	__u16 bport, dport;

	/* Arguments of global functions may be NULL as far as the verifier knows. */
	if (!key || !r)
		return FP_TWIN_NONE;
	baddr = key->saddr.w[3];
	bport = key->sport;
	daddr = key->daddr.w[3];
	dport = key->dport;
	if (r->flags & FP_CT_F_SNAT) {
		key->saddr = r->snat_addr;
		key->sport = r->snat_port;
	} else {
		key->saddr = key->daddr;
		key->sport = dport;
	}
	key->daddr = r->nat_addr;
	key->dport = r->nat_port;
	key->dir = FP_CT_FORWARD;
	f = bpf_map_lookup_elem(&fp_ct, key);
	if (!f || f->nat_addr.w[3] != baddr || f->nat_port != bport ||
	    ((f->flags ^ r->flags) & (FP_CT_F_SNAT | FP_CT_F_SNAT_PORT)))
		return FP_TWIN_NONE;
	if ((f->flags & FP_CT_F_SNAT) && (f->snat_addr.w[3] != daddr || f->snat_port != dport))
		return FP_TWIN_NONE;
	if (f->expires < bpf_ktime_get_boot_ns() || (r->flags & f->flags & FP_CT_F_CLOSING))
		return FP_TWIN_DONE;
	return FP_TWIN_OPEN;
}

static __always_inline int fp_tcp_syn_ack(const struct fp_pkt *p)
{
	return p->proto == IPPROTO_TCP &&
	       (p->tcp_flags & (FP_TCP_SYN | FP_TCP_ACK)) == (FP_TCP_SYN | FP_TCP_ACK);
}

/*
 * fp_ct_reply_stale decides whether REPLY entry e, found at key for packet p
 * (a packet from the backend's side), is left over from a flow that is no
 * more. Live entries cost nothing: only an expired entry or a SYN-ACK makes
 * it look at the flow. An expired entry still translates while its flow is
 * open (a direction can be quiet). A SYN-ACK answers a new SYN: one on a
 * flow that closed, or whose FORWARD entry is gone or balanced elsewhere,
 * belongs to a new connection that reuses the tuple (a direct one: a flow
 * through the VIP would have written fresh entries), as nf_conntrack lets a
 * SYN end a TIME_WAIT entry. A stale
 * entry is deleted with its FORWARD twin, when that is still its own, and
 * 1 returned: the packet goes on as if there had been no entry. key is
 * scratch.
 */
static __always_inline int fp_ct_reply_stale(struct fp_ct_key *key, const struct fp_ct_entry *e,
					     const struct fp_pkt *p)
{
	int twin;

	if (e->expires >= bpf_ktime_get_boot_ns() && !fp_tcp_syn_ack(p))
		return 0;
	twin = fp_ct_twin_state(key, e);
	if (twin == FP_TWIN_OPEN)
		return 0;
	if (twin == FP_TWIN_DONE)
		bpf_map_delete_elem(&fp_ct, key);
	fp_ct_key_v4(key, p->saddr, p->daddr, p->sport, p->dport, p->proto, FP_CT_REPLY);
	bpf_map_delete_elem(&fp_ct, key);
	return 1;
}

/*
 * fp_ct_clash says whether REPLY entry r, found at key, the REPLY key that
 * new flow p would have, belongs to another flow that still holds the
 * tuple: a flow to another destination (or a translated one), whose entry
 * is alive (a closed flow's for the backend's TIME_WAIT, fp_ct_lifetime) or
 * whose flow is open (fp_ct_twin_state). An entry of p's own tuple from
 * before (reopened, or its FORWARD entry lost) is no clash: the client's
 * timestamps on the same four-tuple only grow, and the backend
 * accepts the reuse. key is scratch.
 */
static __always_inline int fp_ct_clash(struct fp_ct_key *key, const struct fp_ct_entry *r,
				       const struct fp_pkt *p)
{
	if (!(r->flags & FP_CT_F_SNAT) && r->nat_addr.w[3] == p->daddr &&
	    r->nat_port == bpf_ntohs(p->dport))
		return 0;
	/* 0: another CPU is taking the tuple over (fp_ct_takeover). */
	if (!r->expires || r->expires >= bpf_ktime_get_boot_ns())
		return 1;
	return fp_ct_twin_state(key, r) == FP_TWIN_OPEN;
}

/* How long after the backend's last packet of a closed flow with a port of
 * its own the same connection again may take that port back (fp_ct_retake):
 * the client's timestamp clock ticks every millisecond. */
#define FP_CT_RETAKE_NS 2000000ULL

/*
 * fp_ct_retake says whether REPLY entry e of a new flow with a port of its
 * own (FP_CT_F_SNAT_PORT) may take the port of the REPLY entry at key,
 * another such flow's tombstone, and claims it if so. The backend holds that
 * tuple in TIME_WAIT and drops a SYN whose timestamp is older than the last
 * one it saw there (PAWS). Linux 6.18 offsets a connection's timestamps by a
 * hash of its four-tuple (seen here: another client port to the same VIP
 * was refused), so only the same connection again, client:port -> VIP:port,
 * has timestamps that only grow, and a SYN from a later millisecond ends the
 * TIME_WAIT (tcp_timewait_state_process), as a reopened direct connection's
 * does. That is what this allows: the tombstone is of the same client
 * address (key), client port and frontend, its flow is done (closed by the
 * backend, its FORWARD entry closed, expired or not its own), and its last
 * reply is FP_CT_RETAKE_NS old (the client's last FIN came before it).
 * Two CPUs may find the same tombstone: the one whose compare-and-swap on
 * expires wins takes it, the other goes on to the next port. The old
 * FORWARD entry, when still its own, goes with it. key is left as it was.
 * A global function, verified once: inlined in fp_snat_port's loop, it was
 * verified for every try (+20,000 instructions).
 */
__attribute__((noinline)) int fp_ct_retake(const struct fp_ct_key *key, const struct fp_ct_entry *e)
{
	struct fp_ct_entry *old;
	struct fp_ct_key twin;
	__u64 seen;
	int state;

	/* Arguments of global functions may be NULL as far as the verifier knows. */
	if (!key || !e || key->proto != IPPROTO_TCP)
		return 0;
	old = bpf_map_lookup_elem(&fp_ct, key);
	if (!old)
		return 0;
	twin = *key;
	seen = old->expires;
	if ((old->flags & (FP_CT_F_SNAT_PORT | FP_CT_F_CLOSING)) !=
		    (FP_CT_F_SNAT_PORT | FP_CT_F_CLOSING) ||
	    old->nat_addr.w[3] != e->nat_addr.w[3] || old->nat_port != e->nat_port ||
	    old->snat_port != e->snat_port || !seen)
		return 0;
	if (bpf_ktime_get_boot_ns() + FP_CT_LIFETIME_TCP_TIME_WAIT * FP_NSEC_PER_SEC <
	    seen + FP_CT_RETAKE_NS)
		return 0;
	state = fp_ct_twin_state(&twin, old);
	if (state == FP_TWIN_OPEN)
		return 0;
	if (__sync_val_compare_and_swap(&old->expires, seen, 0) != seen)
		return 0;
	if (state == FP_TWIN_DONE)
		bpf_map_delete_elem(&fp_ct, &twin);
	return 1;
}

static __always_inline int fp_tcp_bare_syn(const struct fp_pkt *p)
{
	return p->proto == IPPROTO_TCP && (p->tcp_flags & (FP_TCP_SYN | FP_TCP_ACK)) == FP_TCP_SYN;
}

/*
 * fp_ct_takeover says whether the new flow whose SYN starts at l4_off may
 * take over the REPLY entry at key, a closed flow's tombstone with the
 * client's last timestamp (FP_CT_F_TS), and claims it if so; it returns
 * the flow's timestamp delta (0 when the SYN's TSval is already later than
 * the last one the backend saw, so that the backend's TIME_WAIT accepts
 * it), or -1. The closed flow must be done (fp_ct_twin_state), and the SYN
 * must carry a timestamp. As in fp_ct_retake, the CPU whose
 * compare-and-swap of expires to 0 wins takes it; the others see a clash
 * (fp_ct_clash). The old FORWARD entry, when still its own, goes with it.
 * key is left holding that FORWARD key.
 * A global function, verified once for the paths that create flows.
 */
__attribute__((noinline)) long fp_ct_takeover(struct __sk_buff *skb, struct fp_ct_key *key,
					      __u32 l4_off)
{
	struct fp_ct_entry *old;
	__u32 off, tsval, last;
	__u64 seen;
	int state;

	/* Arguments of global functions may be NULL as far as the verifier knows. */
	if (!skb || !key || key->proto != IPPROTO_TCP)
		return -1;
	old = bpf_map_lookup_elem(&fp_ct, key);
	if (!old)
		return -1;
	seen = old->expires;
	last = old->ts_last;
	if ((old->flags & (FP_CT_F_SNAT | FP_CT_F_CLOSING | FP_CT_F_TS)) !=
		    (FP_CT_F_CLOSING | FP_CT_F_TS) || !seen)
		return -1;
	off = fp_tcp_ts_off(skb, l4_off);
	if (!off || fp_tcp_ts_get(skb, off, &tsval) < 0)
		return -1;
	state = fp_ct_twin_state(key, old);
	if (state == FP_TWIN_OPEN)
		return -1;
	if (__sync_val_compare_and_swap(&old->expires, seen, 0) != seen)
		return -1;
	if (state == FP_TWIN_DONE)
		bpf_map_delete_elem(&fp_ct, key);
	return fp_ts_after(tsval, last) ? 0 : (__u32)(last + 1 - tsval);
}

/*
 * fp_ct_ts_note records tsval, the timestamp of client packet p of flow f
 * as the backend gets it, in the flow's REPLY entry (FP_CT_F_TS), so that
 * a later flow can take the tuple over (fp_ct_takeover). Only the latest
 * counts. Flows with SNAT have none: their tombstones are handled by
 * fp_ct_retake. A global function: its key is on its own frame.
 */
__attribute__((noinline)) int fp_ct_ts_note(const struct fp_pkt *p, const struct fp_ct_entry *f,
					    __u32 tsval)
{
	struct fp_ct_key key;
	struct fp_ct_entry *r;

	/* Arguments of global functions may be NULL as far as the verifier knows. */
	if (!p || !f || (f->flags & FP_CT_F_SNAT))
		return 0;
	fp_ct_key_v4(&key, f->nat_addr.w[3], p->saddr, bpf_htons(f->nat_port), p->sport, p->proto,
		     FP_CT_REPLY);
	r = bpf_map_lookup_elem(&fp_ct, &key);
	if (!r || (r->flags & FP_CT_F_SNAT) || r->nat_addr.w[3] != p->daddr ||
	    r->nat_port != bpf_ntohs(p->dport))
		return 0;
	if ((r->flags & FP_CT_F_TS) && !fp_ts_after(tsval, r->ts_last))
		return 0;
	r->ts_last = tsval;
	if (!(r->flags & FP_CT_F_TS))
		r->flags |= FP_CT_F_TS;
	return 0;
}

/*
 * fp_ct_heal_reply writes the REPLY entry of flow f anew when a bare SYN
 * the client sends again (f open, not reopened) finds it missing. The
 * agent's GC can delete a new flow's REPLY entry: when the flow reuses a
 * tuple in the instant between GC's last look at the closed flow's entry
 * and its delete (ctmap.GC; the kernel has no compare-and-delete). The
 * backend's SYN-ACK then passes without reverse NAT and is lost, and
 * without this every SYN sent again followed the FORWARD entry into the
 * same half-flow: a connection stuck until it gave up. The entry is f's
 * twin as fp_ct_create or fp_ct_create_snat writes it, with f's backend,
 * translation and timestamp delta; BPF_NOEXIST, so a port of a masqueraded
 * flow that another flow holds by now stays that flow's. Only SYNs pay the
 * lookup. A global function: its key and entry are on its own frame.
 */
__attribute__((noinline)) int fp_ct_heal_reply(const struct fp_pkt *p, const struct fp_ct_entry *f)
{
	struct fp_ct_entry r = {};
	struct fp_ct_key key;
	__be32 daddr;
	__be16 dport;

	/* Arguments of global functions may be NULL as far as the verifier knows. */
	if (!p || !f || !fp_addr_is_v4(&f->nat_addr))
		return 0;
	daddr = p->saddr;
	dport = p->sport;
	if (f->flags & FP_CT_F_SNAT) {
		daddr = f->snat_addr.w[3];
		dport = bpf_htons(f->snat_port);
	}
	fp_ct_key_v4(&key, f->nat_addr.w[3], daddr, bpf_htons(f->nat_port), dport, p->proto,
		     FP_CT_REPLY);
	if (bpf_map_lookup_elem(&fp_ct, &key))
		return 0;
	fp_addr_set_v4(&r.nat_addr, p->daddr);
	r.nat_port = bpf_ntohs(p->dport);
	r.flags = f->flags & (FP_CT_F_SNAT | FP_CT_F_SNAT_PORT | FP_CT_F_NODEPORT);
	r.rev_nat_id = f->rev_nat_id;
	r.backend_id = f->backend_id;
	if (f->flags & FP_CT_F_SNAT) {
		fp_addr_set_v4(&r.snat_addr, p->saddr);
		r.snat_port = bpf_ntohs(p->sport);
	}
	r.ts_delta = f->ts_delta;
	r.expires = bpf_ktime_get_boot_ns() + FP_CT_LIFETIME_TCP_SYN * FP_NSEC_PER_SEC;
	bpf_map_update_elem(&fp_ct, &key, &r, BPF_NOEXIST);
	return 0;
}

/* fp_ct_create returns it for a flow whose timestamps are translated: its
 * FORWARD entry counts no packet yet, and its first one is sent like its
 * later ones. */
#define FP_CT_TAKEN 1

/*
 * fp_ct_create writes both entries of a new flow, or returns -EADDRINUSE
 * without writing anything when the REPLY key is another flow's
 * (fp_ct_clash) and the flow cannot take it over (fp_ct_takeover): the
 * caller then gives the flow a port of its own (fp_ct_create_snat). It
 * returns FP_CT_TAKEN for a flow that took a tuple over with a timestamp
 * delta, whose first packet is still to be translated. FORWARD goes in with fwd_flag: BPF_NOEXIST normally,
 * so that when two CPUs balance the first packets of one flow at once, the
 * loser gets -EEXIST and follows the winner's backend; BPF_ANY when it
 * replaces a reopened flow's entry. REPLY overwrites only an entry of this
 * tuple or a dead one, and otherwise goes in with BPF_NOEXIST, so a clash
 * that another CPU creates meanwhile is a clash too. If REPLY cannot be
 * written, FORWARD is removed again, as a flow whose replies would not be
 * reverse-NATed is worse than a dropped first packet. One key buffer serves
 * both directions, for stack's sake.
 */
static __always_inline int fp_ct_create(struct __sk_buff *skb, const struct fp_pkt *p,
					const struct fp_choice *c, __u64 fwd_flag)
{
	struct fp_ct_entry e = {};
	struct fp_ct_key key;
	struct fp_ct_entry *old;
	__u64 rep_flag = BPF_NOEXIST;
	long err, delta = -1;
	int clash;

	fp_ct_key_v4(&key, c->addr, p->saddr, bpf_htons(c->port), p->sport, p->proto,
		     FP_CT_REPLY);
	old = bpf_map_lookup_elem(&fp_ct, &key);
	if (old) {
		clash = fp_ct_clash(&key, old, p);
		/* Its own tuple again needs a delta too when the flow before
		 * had one: the backend saw that flow's timestamps shifted. */
		if ((clash || (old->flags & FP_CT_F_TS)) && fp_tcp_bare_syn(p)) {
			fp_ct_key_v4(&key, c->addr, p->saddr, bpf_htons(c->port), p->sport,
				     p->proto, FP_CT_REPLY);
			delta = fp_ct_takeover(skb, &key, p->l4_off);
		}
		if (clash && delta < 0)
			return -EADDRINUSE;
		rep_flag = BPF_ANY;
	}
	if (delta < 0)
		delta = 0;

	fp_addr_set_v4(&e.nat_addr, c->addr);
	e.nat_port = c->port;
	e.flags = fp_ct_flags(fp_ct_svc_flags(c), p);
	e.rev_nat_id = c->rev_nat_id;
	e.backend_id = c->backend_id;
	e.expires = bpf_ktime_get_boot_ns() + fp_ct_lifetime(p, e.flags);
	e.ts_delta = delta;
	if (!delta) {
		e.packets = 1;
		e.bytes = p->len;
	}
	fp_ct_key_fwd(&key, p);
	err = bpf_map_update_elem(&fp_ct, &key, &e, fwd_flag);
	if (err)
		return err;

	fp_ct_key_v4(&key, c->addr, p->saddr, bpf_htons(c->port), p->sport, p->proto,
		     FP_CT_REPLY);
	fp_addr_set_v4(&e.nat_addr, p->daddr);
	e.nat_port = bpf_ntohs(p->dport);
	e.flags = fp_ct_svc_flags(c);
	e.packets = 0;
	e.bytes = 0;
	err = bpf_map_update_elem(&fp_ct, &key, &e, rep_flag);
	if (err) {
		fp_ct_key_fwd(&key, p);
		bpf_map_delete_elem(&fp_ct, &key);
		return err == -EEXIST ? -EADDRINUSE : err;
	}
	return delta ? FP_CT_TAKEN : 0;
}

/*
 * fp_ct_forget_snat deletes the REPLY entry of a masqueraded FORWARD entry
 * that is about to be replaced (a reopened tuple), so its port is free at
 * once instead of when the GC finds both expired. The REPLY entry of a flow
 * with a port of its own for a clash stays: it is the backend's TIME_WAIT
 * tuple, which the port must not be given out again into.
 */
static __always_inline void fp_ct_forget_snat(const struct fp_ct_entry *e, __u8 proto)
{
	struct fp_ct_key rkey;

	if (!fp_ct_masq(e->flags))
		return;
	fp_ct_key_v4(&rkey, e->nat_addr.w[3], e->snat_addr.w[3], bpf_htons(e->nat_port),
		     bpf_htons(e->snat_port), proto, FP_CT_REPLY);
	bpf_map_delete_elem(&fp_ct, &rkey);
}

#endif /* FASTPATH_CT_H */
