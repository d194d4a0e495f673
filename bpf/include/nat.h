/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Address and port rewrites of an IPv4 packet with incremental checksum
 * fixes. Stores go through bpf_skb_store_bytes and checksums through
 * bpf_l3/l4_csum_replace, which work on non-linear skbs and keep
 * skb->csum consistent for CHECKSUM_COMPLETE and the pseudo-header sum of
 * CHECKSUM_PARTIAL packets (the BPF_F_PSEUDO_HDR flag).
 */
#ifndef FASTPATH_NAT_H
#define FASTPATH_NAT_H

#include "pkt.h"
#include "csum.h"
#include "crc32c.h"

/* Which end of a packet a rewrite changes. */
enum fp_side {
	FP_SRC,
	FP_DST,
};

static __always_inline int fp_nat_addr(struct __sk_buff *skb, const struct fp_pkt *p,
				       enum fp_side side, __be32 from, __be32 to)
{
	__u32 off = side == FP_SRC ? FP_IP_SRC_OFF : FP_IP_DST_OFF;
	int csum_off = fp_l4_csum_off(p->proto);

	if (from == to)
		return 0;
	if (bpf_skb_store_bytes(skb, off, &to, sizeof(to), 0) < 0)
		return -1;
	if (bpf_l3_csum_replace(skb, FP_IP_CSUM_OFF, from, to, sizeof(to)) < 0)
		return -1;
	if (csum_off < 0)
		return 0;
	return bpf_l4_csum_replace(skb, p->l4_off + csum_off, from, to,
				   BPF_F_PSEUDO_HDR | fp_l4_csum_flags(p->proto) | sizeof(to));
}

/*
 * fp_sctp_crc_update folds a change of the first four SCTP bytes (the ports)
 * into the CRC32c. delta is old ^ new of those bytes loaded as a
 * little-endian word; the CRC is stored little-endian. Both hold because the
 * objects are built for bpfel only.
 */
static __always_inline int fp_sctp_crc_update(struct __sk_buff *skb, const struct fp_pkt *p,
					      __u32 delta)
{
	__u32 off = p->l4_off + 8;
	__u32 crc;

	if (bpf_skb_load_bytes(skb, off, &crc, sizeof(crc)) < 0)
		return -1;
	/* 0 is a CRC left to offload (CHECKSUM_PARTIAL) or the zero checksum
	 * of RFC 9653; either way it must stay 0. */
	if (!crc)
		return 0;
	crc ^= fp_crc32c_delta(delta, p->l4_len - 4);
	return bpf_skb_store_bytes(skb, off, &crc, sizeof(crc), 0);
}

static __always_inline int fp_nat_port(struct __sk_buff *skb, const struct fp_pkt *p,
				       enum fp_side side, __be16 from, __be16 to)
{
	__u32 off = p->l4_off + (side == FP_SRC ? 0 : 2);
	int csum_off = fp_l4_csum_off(p->proto);

	if (from == to)
		return 0;
	if (bpf_skb_store_bytes(skb, off, &to, sizeof(to), 0) < 0)
		return -1;
	if (p->proto == IPPROTO_SCTP)
		return fp_sctp_crc_update(skb, p, (__u32)(from ^ to) << (side == FP_SRC ? 0 : 16));
	if (csum_off < 0)
		return 0;
	return bpf_l4_csum_replace(skb, p->l4_off + csum_off, from, to,
				   fp_l4_csum_flags(p->proto) | sizeof(to));
}

/* fp_nat rewrites one end of the packet to addr:port (network order). */
static __always_inline int fp_nat(struct __sk_buff *skb, const struct fp_pkt *p,
				  enum fp_side side, __be32 addr, __be16 port)
{
	if (side == FP_SRC) {
		if (fp_nat_addr(skb, p, side, p->saddr, addr) < 0)
			return -1;
		return fp_nat_port(skb, p, side, p->sport, port);
	}
	if (fp_nat_addr(skb, p, side, p->daddr, addr) < 0)
		return -1;
	return fp_nat_port(skb, p, side, p->dport, port);
}

#endif /* FASTPATH_NAT_H */
