/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Reject for a service without backends, as kube-proxy's
 * "-j REJECT --reject-with icmp-port-unreachable": the packet is turned into
 * an ICMP port unreachable from the VIP to the client and sent back out of
 * the interface it came in on. A TCP client sees ECONNREFUSED, a UDP one an
 * error on its next socket call.
 *
 * The quote is the original IPv4 header and the fixed part of the transport
 * header (TCP 20, UDP 8, SCTP 12 bytes), not just the 8 bytes RFC 792 asks
 * for (the kernel quotes up to 576 bytes). The reason is
 * bpf_skb_change_tail: on a CHECKSUM_PARTIAL packet (sent by a local pod
 * through a veth) it refuses to cut before the end of the transport checksum
 * field, which for TCP and SCTP lies past byte 8.
 */
#ifndef FASTPATH_REJECT_H
#define FASTPATH_REJECT_H

#include <linux/pkt_cls.h>
#include "pkt.h"
#include "csum.h"

#define FP_QUOTE_MAX (60 + 20) /* IPv4 header with options + TCP header */
#define FP_ICMP_TOS 0xc0      /* IPTOS_PREC_INTERNETCONTROL, as the kernel sends errors */
#define FP_IPTOS_TOS_MASK 0x1e
#define FP_ICMP_TTL 64

struct fp_icmp_err {
	struct iphdr ip;
	struct fp_icmphdr icmp;
};

/* The headers a reject inserts between the ethernet header and the quote. */
#define FP_REJECT_GROW ((__s32)sizeof(struct fp_icmp_err))

static __always_inline int fp_ipv4_is_group(__u32 a /* host order */)
{
	return (a >> 28) == 0xe || a == 0xffffffff;
}

/* fp_l4_fixed_len is the part of the transport header the parser checked is
 * present, and the reject quotes. */
static __always_inline __u32 fp_l4_fixed_len(__u8 proto)
{
	switch (proto) {
	case IPPROTO_TCP:
		return sizeof(struct tcphdr);
	case IPPROTO_SCTP:
		return 12;
	}
	return 8;
}

/*
 * fp_may_send_icmp_err applies RFC 1122 3.2.2: no error about an ICMP error
 * (nor any ICMP: services are TCP/UDP/SCTP), a non-first fragment (filtered
 * by the parser), a link-layer or IP broadcast or multicast, or a packet
 * whose source does not name a single host.
 */
static __always_inline int fp_may_send_icmp_err(const struct fp_pkt *p)
{
	__u32 s = bpf_ntohl(p->saddr), d = bpf_ntohl(p->daddr);

	if (p->proto == IPPROTO_ICMP || p->l2_group)
		return 0;
	if (fp_ipv4_is_group(d) || fp_ipv4_is_group(s) || s == 0)
		return 0;
	return 1;
}

/*
 * fp_reject rewrites the packet into the ICMP error and returns the redirect
 * verdict, or TC_ACT_SHOT when no error may or can be sent. Checksums are
 * computed in full (bpf_csum_diff over the new headers and the quote, read
 * before the packet is resized).
 */
static __always_inline int fp_reject(struct __sk_buff *skb, const struct fp_pkt *p)
{
	__u8 quote[FP_QUOTE_MAX] = {};
	__u8 macs[2 * ETH_ALEN];
	__u8 swapped[2 * ETH_ALEN];
	struct fp_icmp_err h = {};
	__u32 ihl = p->ihl & 0xf;
	__u32 qlen;
	__s64 sum;
	int i;

	if (!fp_may_send_icmp_err(p) || ihl < 5)
		return TC_ACT_SHOT;
	qlen = ihl * 4 + fp_l4_fixed_len(p->proto);
	if (bpf_skb_load_bytes(skb, 0, macs, sizeof(macs)) < 0 ||
	    bpf_skb_load_bytes(skb, FP_IP_OFF, quote, qlen) < 0)
		return TC_ACT_SHOT;

	h.ip.version = 4;
	h.ip.ihl = sizeof(h.ip) / 4;
	h.ip.tos = (p->tos & FP_IPTOS_TOS_MASK) | FP_ICMP_TOS;
	h.ip.tot_len = bpf_htons(sizeof(h) + qlen);
	h.ip.ttl = FP_ICMP_TTL;
	h.ip.protocol = IPPROTO_ICMP;
	h.ip.saddr = p->daddr;
	h.ip.daddr = p->saddr;
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&h.ip, sizeof(h.ip), 0);
	if (sum < 0)
		return TC_ACT_SHOT;
	h.ip.check = fp_csum_fold(sum);

	h.icmp.type = FP_ICMP_DEST_UNREACH;
	h.icmp.code = FP_ICMP_PORT_UNREACH;
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&h.icmp, sizeof(h.icmp), 0);
	if (sum < 0)
		return TC_ACT_SHOT;
	sum = bpf_csum_diff(NULL, 0, (__be32 *)quote, qlen, sum);
	if (sum < 0)
		return TC_ACT_SHOT;
	h.icmp.checksum = fp_csum_fold(sum);

#pragma unroll
	for (i = 0; i < ETH_ALEN; i++) {
		swapped[i] = macs[ETH_ALEN + i];
		swapped[ETH_ALEN + i] = macs[i];
	}

	/* Cut to ethernet + quote, then open room for IPv4 + ICMP after the
	 * ethernet header; the quote stays where it is. */
	if (bpf_skb_change_tail(skb, ETH_HLEN + qlen, 0) < 0 ||
	    bpf_skb_adjust_room(skb, FP_REJECT_GROW, BPF_ADJ_ROOM_MAC, 0) < 0 ||
	    bpf_skb_store_bytes(skb, 0, swapped, sizeof(swapped), 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN, &h, sizeof(h), 0) < 0)
		return TC_ACT_SHOT;
	return bpf_redirect(skb->ifindex, 0);
}

#endif /* FASTPATH_REJECT_H */
