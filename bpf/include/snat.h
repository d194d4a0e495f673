/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Masquerade (source NAT) of load-balanced flows, for the cases where
 * kube-proxy marks a packet for masquerade (KUBE-MARK-MASQ):
 *   - hairpin: the backend chosen is the client itself; without SNAT it
 *     would get a packet from its own address and drop it;
 *   - traffic from an external interface to a service without
 *     externalTrafficPolicy: Local (FP_SVC_F_EXT_LOCAL), so that the
 *     backend, wherever it runs, answers through this node.
 * The source becomes the node's masquerade address (fp_config) and a port
 * of the flow's own from the configured range, which lies outside the
 * node's ephemeral ports so local sockets never collide with it.
 *
 * The same port search serves flows whose tuple at the backend clashed with
 * another flow's (ct.h): they keep the client's address and get a port of
 * that range, which lies outside the client's ephemeral ports too when it
 * runs Linux with the default range (32768-60999). Such a flow is not
 * masqueraded: its source is no local address, so it goes to the stack.
 *
 * A masqueraded packet cannot be handed to the stack: its source is now a
 * local address, which IPv4 input drops as a martian (fib_validate_source,
 * unless accept_local is set). So it leaves straight from here, through the
 * FIB's choice of interface and neighbour, as Cilium's NodePort does; the
 * TTL is decremented as a router would. Replies need none of this: their
 * destination is the client again, which the stack forwards.
 */
#ifndef FASTPATH_SNAT_H
#define FASTPATH_SNAT_H

#include <linux/bpf.h>
#include <linux/errno.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include "maps.h"
#include "pkt.h"
#include "ct.h"

/* Ports tried for one new flow before it is dropped; a range of at most
 * this many ports is searched in full. */
#define FP_SNAT_TRIES 32

#define FP_AF_INET 2

/* fp_config_get returns the node's settings; the array always has entry 0. */
static __always_inline const struct fp_config *fp_config_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&fp_config, &zero);
}

/*
 * Flows with a port of their own for a clash also take ports from
 * [fp_clash_port_min, fp_clash_port_max], after the configured range: Linux
 * NAT gives such a flow any port from 1024 up (nf_nat_l4proto_unique_tuple),
 * of which these lie below the default ephemeral ports (32768-60999), which
 * the client's own, untracked connections may use. Each port is held through
 * the backend's TIME_WAIT (60 s), so the range is what bounds how many
 * clashing flows a second one client can open to one backend: 75 with the
 * 4,536 masquerade ports alone, 604 with these too. 0 as min: none.
 */
volatile const __u16 fp_clash_port_min = 1024;
volatile const __u16 fp_clash_port_max = 32767;

/* fp_snat_hash spreads the connections of a clash over the ports, the same
 * connection again to the same place (fp_ct_retake). */
static __always_inline __u32 fp_snat_hash(const struct fp_ct_entry *e)
{
	__u32 h = bpf_ntohl(e->nat_addr.w[3]) ^ ((__u32)e->snat_port << 16 | e->nat_port);

	return (h * 2654435761u) >> 8;
}

/*
 * fp_snat_port inserts the REPLY entry e of a new masqueraded flow under key
 * (backend -> masquerade address), trying ports for key->dport, and returns
 * the port it got, -EADDRNOTAVAIL when all it tried were taken, or another
 * negative error of the map. The insert uses BPF_NOEXIST: the port
 * is taken when it succeeds, so no two CPUs can share one. Candidates are
 * probed linearly from a random start, at most FP_SNAT_TRIES of them: the
 * random start spreads flows over the range, the bound caps the map
 * operations of one packet, and a range no larger than the bound is searched
 * in full (which also makes exhaustion testable). As in Linux NAT, a port is
 * unique per backend address, port and protocol and source address (the
 * key's daddr), not per node. Port 0 is no port: a range starting there
 * (an fp_config never written) has none.
 * A flow with a port of its own for a clash (FP_CT_F_SNAT_PORT) searches
 * the clash ports after the configured range too, and starts where its
 * connection hashes to, so that the same connection again finds the port
 * it had and may take it back (fp_ct_retake); half way through the tries it
 * jumps to a random port, so a crowded neighbourhood does not drop flows
 * while the rest of the range is free.
 * A global function, verified once on its own: inlined, its loop counters
 * would be spilled on the caller's frame, the deepest of this program, and
 * as a static subprogram it would be verified again for every caller state
 * (four times the instructions of the whole program before it).
 */
__attribute__((noinline)) int fp_snat_port(struct fp_ct_key *key, const struct fp_ct_entry *e,
					   const struct fp_config *cfg)
{
	__u32 min, max, span, cspan = 0, off, i;
	__u16 clash;
	long err;

	/* Arguments of global functions may be NULL as far as the verifier knows. */
	if (!key || !e || !cfg)
		return -EINVAL;
	min = cfg->snat_port_min;
	max = cfg->snat_port_max;
	if (min == 0 || max < min)
		return -EADDRNOTAVAIL;
	span = max - min + 1;
	clash = e->flags & FP_CT_F_SNAT_PORT;
	if (clash && fp_clash_port_min && fp_clash_port_max >= fp_clash_port_min)
		cspan = fp_clash_port_max - fp_clash_port_min + 1;
	off = (clash ? fp_snat_hash(e) : bpf_get_prandom_u32()) % (span + cspan);
	for (i = 0; i < FP_SNAT_TRIES && i < span + cspan; i++) {
		key->dport = off < span ? min + off : fp_clash_port_min + (off - span);
		err = bpf_map_update_elem(&fp_ct, key, e, BPF_NOEXIST);
		if (err == -EEXIST && clash && fp_ct_retake(key, e))
			err = bpf_map_update_elem(&fp_ct, key, e, BPF_ANY);
		if (err != -EEXIST)
			return err ? err : key->dport;
		if (clash && i == FP_SNAT_TRIES / 2 - 1 && span + cspan > FP_SNAT_TRIES)
			off = bpf_get_prandom_u32() % (span + cspan);
		else if (++off == span + cspan)
			off = 0;
	}
	return -EADDRNOTAVAIL;
}

/*
 * fp_ct_create_snat writes both entries of a new flow whose source becomes
 * saddr and a port of cfg's range: a masqueraded one (saddr the masquerade
 * address, flags 0) or one with a port of its own for a clash (saddr the
 * client's, flags FP_CT_F_SNAT_PORT). REPLY goes first, as its key is what
 * must be unique (fp_snat_port), then FORWARD with fwd_flag as in
 * fp_ct_create; if that fails, REPLY is removed again. FORWARD counts no
 * packet yet: the first one is sent and counted like the flow's later ones.
 * Returns 0, -EADDRNOTAVAIL when no port was free, or a map error (-EEXIST:
 * another CPU balanced the flow first).
 */
static __always_inline int fp_ct_create_snat(const struct fp_pkt *p, const struct fp_choice *c,
					     const struct fp_config *cfg, __be32 saddr,
					     __u64 fwd_flag, __u16 flags)
{
	struct fp_ct_entry e = {};
	struct fp_ct_key key;
	int port;
	long err;

	flags |= FP_CT_F_SNAT | fp_ct_svc_flags(c);
	fp_ct_key_v4(&key, c->addr, saddr, bpf_htons(c->port), 0, p->proto, FP_CT_REPLY);
	fp_addr_set_v4(&e.nat_addr, p->daddr);
	e.nat_port = bpf_ntohs(p->dport);
	e.flags = flags;
	e.rev_nat_id = c->rev_nat_id;
	e.backend_id = c->backend_id;
	fp_addr_set_v4(&e.snat_addr, p->saddr);
	e.snat_port = bpf_ntohs(p->sport);
	e.expires = bpf_ktime_get_boot_ns() + fp_ct_lifetime(p, fp_ct_flags(0, p));
	port = fp_snat_port(&key, &e, cfg);
	if (port < 0)
		return port;

	fp_addr_set_v4(&e.nat_addr, c->addr);
	e.nat_port = c->port;
	e.flags = fp_ct_flags(0, p) | flags;
	fp_addr_set_v4(&e.snat_addr, saddr);
	e.snat_port = port;
	fp_ct_key_fwd(&key, p);
	err = bpf_map_update_elem(&fp_ct, &key, &e, fwd_flag);
	if (err) {
		fp_ct_key_v4(&key, c->addr, saddr, bpf_htons(c->port), bpf_htons(port), p->proto,
			     FP_CT_REPLY);
		bpf_map_delete_elem(&fp_ct, &key);
	}
	return err;
}

/* Where a masqueraded packet leaves: what fp_redirect needs of a FIB lookup. */
struct fp_nexthop {
	__u8 macs[2 * ETH_ALEN]; /* destination, source: as in the ethernet header */
	__u32 ifindex;
	__be32 addr;  /* the neighbour: the backend or the gateway towards it */
	int rc;       /* BPF_FIB_LKUP_RET_* */
};

/*
 * fp_fib asks the FIB how a packet from saddr to daddr (backend port dport,
 * network order) leaves, as the stack would route it had it arrived so. It
 * returns the BPF_FIB_LKUP_RET_* code, also kept in nh; fp_fib_ok says
 * whether the packet can be sent. Only the result is kept, not the 64-byte
 * lookup structure: stack is what limits this program.
 */
static __always_inline int fp_fib(struct __sk_buff *skb, const struct fp_pkt *p, __be32 saddr,
				  __be32 daddr, __be16 dport, struct fp_nexthop *nh)
{
	struct bpf_fib_lookup fib = {};

	fib.family = FP_AF_INET;
	fib.tos = p->tos;
	fib.l4_protocol = p->proto;
	fib.sport = p->sport;
	fib.dport = dport;
	fib.ipv4_src = saddr;
	fib.ipv4_dst = daddr;
	fib.ifindex = skb->ifindex;
	nh->rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	__builtin_memcpy(nh->macs, fib.dmac, ETH_ALEN);
	__builtin_memcpy(nh->macs + ETH_ALEN, fib.smac, ETH_ALEN);
	nh->ifindex = fib.ifindex;
	nh->addr = fib.ipv4_dst;
	return nh->rc;
}

static __always_inline int fp_fib_ok(int rc)
{
	return rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_NO_NEIGH;
}

/*
 * fp_redirect sends a rewritten packet out where fp_fib said (fp_fib_ok):
 * TTL down by one, then with the neighbour's MAC, or through the kernel's
 * neighbour resolution when the FIB had none yet. Callers hand packets with
 * TTL <= 1 to the stack before rewriting anything, so the client gets the
 * stack's time-exceeded about the packet it sent.
 */
static __always_inline int fp_redirect(struct __sk_buff *skb, const struct fp_pkt *p,
				       const struct fp_nexthop *nh)
{
	struct bpf_redir_neigh rn = {};
	__u8 ttl = p->ttl - 1;

	if (bpf_skb_store_bytes(skb, FP_IP_TTL_OFF, &ttl, sizeof(ttl), 0) < 0 ||
	    bpf_l3_csum_replace(skb, FP_IP_CSUM_OFF, bpf_htons((__u16)p->ttl << 8),
				bpf_htons((__u16)ttl << 8), sizeof(__u16)) < 0)
		return -1;
	if (nh->rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		rn.nh_family = FP_AF_INET;
		rn.ipv4_nh = nh->addr;
		return bpf_redirect_neigh(nh->ifindex, &rn, sizeof(rn), 0);
	}
	if (bpf_skb_store_bytes(skb, 0, nh->macs, sizeof(nh->macs), 0) < 0)
		return -1;
	return bpf_redirect(nh->ifindex, 0);
}

#endif /* FASTPATH_SNAT_H */
