/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Parsing of ethernet/IPv4 frames for the TC datapath. The parser reads
 * headers through direct packet access and copies what later stages need into
 * struct fp_pkt, so no packet pointer outlives it: every later change to the
 * packet goes through helpers, which invalidate packet pointers anyway.
 */
#ifndef FASTPATH_PKT_H
#define FASTPATH_PKT_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define FP_IP_MF 0x2000
#define FP_IP_OFFSET 0x1fff

/* TCP flag bits as in byte 13 of the TCP header. */
#define FP_TCP_FIN 0x01
#define FP_TCP_SYN 0x02
#define FP_TCP_RST 0x04
#define FP_TCP_ACK 0x10

/* ICMP, declared here: <linux/icmp.h> drags in libc headers. */
struct fp_icmphdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be32 rest; /* unused, pointer or next-hop MTU, by type */
};

#define FP_ICMP_DEST_UNREACH 3
#define FP_ICMP_PORT_UNREACH 3 /* code of FP_ICMP_DEST_UNREACH */
#define FP_ICMP_TIME_EXCEEDED 11
#define FP_ICMP_PARAMETERPROB 12

/* Offsets from the start of the frame; IPv4 always follows the ethernet header. */
#define FP_IP_OFF ETH_HLEN
#define FP_IP_TTL_OFF (ETH_HLEN + offsetof(struct iphdr, ttl))
#define FP_IP_CSUM_OFF (ETH_HLEN + offsetof(struct iphdr, check))
#define FP_IP_SRC_OFF (ETH_HLEN + offsetof(struct iphdr, saddr))
#define FP_IP_DST_OFF (ETH_HLEN + offsetof(struct iphdr, daddr))

/* Bound for header offsets: eth + IPv4 with options + ICMP + inner IPv4 with options. */
#define FP_HDR_OFF_MAX 256

/* The headers of one IPv4 packet, copied out of the frame. */
struct fp_pkt {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;   /* TCP/UDP/SCTP, as in the packet; 0 otherwise */
	__be16 dport;
	__u32 len;      /* skb->len, for counters */
	__u16 l4_off;   /* transport header, from the start of the frame */
	__u16 l4_len;   /* IPv4 payload length according to tot_len */
	__u8 ihl;       /* IPv4 header length in 32-bit words, 5..15 */
	__u8 tos;
	__u8 ttl;
	__u8 proto;
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 l2_group;  /* destination MAC is broadcast or multicast */
};

enum fp_parse_result {
	FP_PARSE_OK,        /* IPv4 TCP/UDP/SCTP with ports, or ICMP with a header */
	FP_PARSE_PASS,      /* not ours: not IPv4, non-first fragment, other protocol */
	FP_PARSE_MALFORMED, /* IPv4 that no receiver would accept */
};

/*
 * fp_hdr returns a pointer to len bytes at off, or NULL when the frame is
 * shorter. Drivers may leave headers in paged data (GRO, header split), so a
 * short linear area is pulled before giving up. The pointer is only valid
 * until the next helper that changes the packet.
 */
static __always_inline void *fp_hdr(struct __sk_buff *skb, __u32 off, __u32 len)
{
	void *data, *data_end;

	if (off > FP_HDR_OFF_MAX)
		return NULL;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	if (data + off + len <= data_end)
		return data + off;
	if (off + len > skb->len || bpf_skb_pull_data(skb, off + len) < 0)
		return NULL;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	if (data + off + len > data_end)
		return NULL;
	return data + off;
}

/* fp_parse_l4 reads ports and flags. A transport header too short for its
 * protocol makes the packet malformed: the kernel would drop it as well. */
static __always_inline int fp_parse_l4(struct __sk_buff *skb, struct fp_pkt *p)
{
	struct tcphdr *tcp;
	struct udphdr *udp;
	__be16 *ports;
	struct fp_icmphdr *icmp;

	switch (p->proto) {
	case IPPROTO_TCP:
		tcp = fp_hdr(skb, p->l4_off, sizeof(*tcp));
		if (!tcp || tcp->doff < 5)
			return FP_PARSE_MALFORMED;
		p->sport = tcp->source;
		p->dport = tcp->dest;
		p->tcp_flags = ((__u8 *)tcp)[13];
		return FP_PARSE_OK;
	case IPPROTO_UDP:
		udp = fp_hdr(skb, p->l4_off, sizeof(*udp));
		if (!udp)
			return FP_PARSE_MALFORMED;
		p->sport = udp->source;
		p->dport = udp->dest;
		return FP_PARSE_OK;
	case IPPROTO_SCTP:
		/* Common header: ports, verification tag, CRC32c. The CRC
		 * update needs the payload length to be true. */
		ports = fp_hdr(skb, p->l4_off, 12);
		if (!ports || p->l4_len < 12 ||
		    (__u32)p->l4_off + p->l4_len > skb->len)
			return FP_PARSE_MALFORMED;
		p->sport = ports[0];
		p->dport = ports[1];
		return FP_PARSE_OK;
	case IPPROTO_ICMP:
		icmp = fp_hdr(skb, p->l4_off, sizeof(*icmp));
		if (!icmp)
			return FP_PARSE_PASS;
		p->icmp_type = icmp->type;
		return FP_PARSE_OK;
	}
	return FP_PARSE_PASS;
}

static __always_inline int fp_parse(struct __sk_buff *skb, struct fp_pkt *p)
{
	struct ethhdr *eth;
	struct iphdr *ip;
	__u16 tot_len;

	if (skb->protocol != bpf_htons(ETH_P_IP))
		return FP_PARSE_PASS;
	eth = fp_hdr(skb, 0, ETH_HLEN);
	if (!eth || eth->h_proto != bpf_htons(ETH_P_IP))
		return FP_PARSE_PASS;
	p->l2_group = eth->h_dest[0] & 1;

	ip = fp_hdr(skb, FP_IP_OFF, sizeof(*ip));
	if (!ip || ip->version != 4 || ip->ihl < 5)
		return FP_PARSE_MALFORMED;
	/* Later fragments carry no ports; the first one is balanced, these
	 * reach nobody (no fragment tracking yet). */
	if (ip->frag_off & bpf_htons(FP_IP_OFFSET))
		return FP_PARSE_PASS;
	p->saddr = ip->saddr;
	p->daddr = ip->daddr;
	p->proto = ip->protocol;
	p->tos = ip->tos;
	p->ttl = ip->ttl;
	p->ihl = ip->ihl;
	p->l4_off = ETH_HLEN + ip->ihl * 4;
	/* tot_len is not validated: GRO packets beyond 64k (BIG TCP) carry 0. */
	tot_len = bpf_ntohs(ip->tot_len);
	p->l4_len = tot_len > ip->ihl * 4 ? tot_len - ip->ihl * 4 : 0;
	p->len = skb->len;
	return fp_parse_l4(skb, p);
}

#endif /* FASTPATH_PKT_H */
