/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * ICMP errors about load-balanced flows. An error quotes the packet that
 * caused it (IPv4 header + at least 8 bytes), as that packet was on the wire
 * where the error arose: translated if it was past our NAT. For the client to
 * match the error to its socket (PMTU discovery, unreachables), the quote
 * must be translated back like any reply, and the other way round for errors
 * a client sends about replies it received.
 */
#ifndef FASTPATH_ICMP_H
#define FASTPATH_ICMP_H

#include "pkt.h"
#include "nat.h"

/* The quoted packet of an ICMP error. */
struct fp_inner {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__sum16 check;  /* the quoted IPv4 header checksum */
	__u16 l3_off;   /* from the start of the frame */
	__u16 l4_off;
	__u8 proto;
};

static __always_inline int fp_icmp_is_error(__u8 type)
{
	return type == FP_ICMP_DEST_UNREACH || type == FP_ICMP_TIME_EXCEEDED ||
	       type == FP_ICMP_PARAMETERPROB;
}

/* fp_icmp_inner reads the quoted packet; -1 when it is nothing we translate. */
static __always_inline int fp_icmp_inner(struct __sk_buff *skb, const struct fp_pkt *p,
					 struct fp_inner *in)
{
	struct iphdr *ip;
	__be16 *ports;

	in->l3_off = p->l4_off + sizeof(struct fp_icmphdr);
	ip = fp_hdr(skb, in->l3_off, sizeof(*ip));
	if (!ip || ip->version != 4 || ip->ihl < 5 || (ip->frag_off & bpf_htons(FP_IP_OFFSET)))
		return -1;
	switch (ip->protocol) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_SCTP:
		break;
	default:
		return -1;
	}
	in->proto = ip->protocol;
	in->saddr = ip->saddr;
	in->daddr = ip->daddr;
	in->check = ip->check;
	in->l4_off = in->l3_off + ip->ihl * 4;
	ports = fp_hdr(skb, in->l4_off, 2 * sizeof(__be16));
	if (!ports)
		return -1;
	in->sport = ports[0];
	in->dport = ports[1];
	return 0;
}

/*
 * fp_icmp_xlate rewrites the inner_side end of the quoted packet to
 * addr:port, and the opposite end of the outer packet when it is the same
 * host (a backend reporting about itself; a router in between keeps its own
 * address). The ICMP checksum covers the quote but no pseudo header, so every
 * changed quoted field, the quoted IPv4 checksum included, is folded into it.
 * The quoted transport checksum is left alone: a TCP one is not even in the
 * 8 bytes, and receivers do not verify quotes. in->check follows the quoted
 * header checksum, so both ends of a quote can be translated in turn.
 */
static __always_inline int fp_icmp_xlate(struct __sk_buff *skb, const struct fp_pkt *p,
					 struct fp_inner *in, enum fp_side inner_side,
					 __be32 addr, __be16 port)
{
	__u32 icmp_csum = p->l4_off + offsetof(struct fp_icmphdr, checksum);
	__u32 in_csum = in->l3_off + offsetof(struct iphdr, check);
	__u32 addr_off, port_off, outer_off;
	__be32 from_addr, outer;
	__be16 from_port;
	__sum16 check;

	if (inner_side == FP_DST) {
		from_addr = in->daddr;
		from_port = in->dport;
		addr_off = in->l3_off + offsetof(struct iphdr, daddr);
		port_off = in->l4_off + sizeof(__be16);
		outer = p->saddr;
		outer_off = FP_IP_SRC_OFF;
	} else {
		from_addr = in->saddr;
		from_port = in->sport;
		addr_off = in->l3_off + offsetof(struct iphdr, saddr);
		port_off = in->l4_off;
		outer = p->daddr;
		outer_off = FP_IP_DST_OFF;
	}

	if (from_addr != addr) {
		if (outer == from_addr &&
		    (bpf_skb_store_bytes(skb, outer_off, &addr, sizeof(addr), 0) < 0 ||
		     bpf_l3_csum_replace(skb, FP_IP_CSUM_OFF, from_addr, addr, sizeof(addr)) < 0))
			return -1;
		if (bpf_skb_store_bytes(skb, addr_off, &addr, sizeof(addr), 0) < 0 ||
		    bpf_l3_csum_replace(skb, in_csum, from_addr, addr, sizeof(addr)) < 0 ||
		    bpf_l4_csum_replace(skb, icmp_csum, from_addr, addr, sizeof(addr)) < 0 ||
		    bpf_skb_load_bytes(skb, in_csum, &check, sizeof(check)) < 0 ||
		    bpf_l4_csum_replace(skb, icmp_csum, in->check, check, sizeof(check)) < 0)
			return -1;
		in->check = check;
	}
	if (from_port != port &&
	    (bpf_skb_store_bytes(skb, port_off, &port, sizeof(port), 0) < 0 ||
	     bpf_l4_csum_replace(skb, icmp_csum, from_port, port, sizeof(port)) < 0))
		return -1;
	return 0;
}

#endif /* FASTPATH_ICMP_H */
