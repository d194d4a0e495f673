/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The TCP timestamp option (RFC 7323) of a packet: where it is, and shifting
 * its values, for flows that took over a closed flow's tuple at the backend
 * (ct.h, tuple clashes). Options are read only for the packets that need
 * them: a flow's SYN into a tombstone, its packets while closing, and every
 * packet of a flow whose timestamps are translated.
 */
#ifndef FASTPATH_TCPTS_H
#define FASTPATH_TCPTS_H

#include <linux/bpf.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "pkt.h"

#define FP_TCPOPT_EOL 0
#define FP_TCPOPT_NOP 1
#define FP_TCPOPT_TS 8
#define FP_TCPOLEN_TS 10
#define FP_TCPOPT_MSS 2
#define FP_TCPOLEN_MSS 4
#define FP_TCPOPT_SACK_PERM 4
#define FP_TCPOLEN_SACK_PERM 2
/* 60-byte header at most: 40 bytes of options. */
#define FP_TCPOPT_MAX 40

/* The walk over one packet's options, as bpf_loop's context. */
struct fp_tcpopt_walk {
	struct __sk_buff *skb;
	__u32 base; /* the first option's offset in the frame */
	__u32 len;  /* bytes of options */
	__u32 i;    /* the option looked at */
	__u32 ts;   /* the TSval's offset in the frame; 0: none (yet) */
};

/* fp_tcpopt_step looks at the option at w->i; 1 ends the walk. */
static long fp_tcpopt_step(__u64 n, void *ctx)
{
	struct fp_tcpopt_walk *w = ctx;
	__u32 i = w->i;
	__u8 opt[2];

	if (i >= w->len)
		return 1;
	/* Two bytes: only a NOP or EOL as the packet's last byte has no
	 * second one, and no TS option follows it. */
	if (bpf_skb_load_bytes(w->skb, w->base + i, opt, 2) < 0 || opt[0] == FP_TCPOPT_EOL)
		return 1;
	if (opt[0] == FP_TCPOPT_NOP) {
		w->i = i + 1;
		return 0;
	}
	if (opt[1] < 2 || i + opt[1] > w->len)
		return 1;
	if (opt[0] == FP_TCPOPT_TS) {
		if (opt[1] == FP_TCPOLEN_TS)
			w->ts = w->base + i + 2;
		return 1;
	}
	w->i = i + opt[1];
	return 0;
}

/*
 * fp_tcp_ts_linux finds the TSval where Linux puts it, from one read of the
 * options' first 8 bytes: NOP, NOP, TS on every packet but a SYN (TSval at
 * 4), MSS, SACK_PERM, TS on a SYN (TSval at 8). 0 for any other layout,
 * which the walk then reads. Both layouts are what the walk would find:
 * each option before TS is whole and the TS option fits in len.
 */
static __always_inline __u32 fp_tcp_ts_linux(struct __sk_buff *skb, __u32 base, __u32 len)
{
	__u8 o[8];

	if (len < 12 || bpf_skb_load_bytes(skb, base, o, sizeof(o)) < 0)
		return 0;
	if (o[0] == FP_TCPOPT_NOP && o[1] == FP_TCPOPT_NOP && o[2] == FP_TCPOPT_TS &&
	    o[3] == FP_TCPOLEN_TS)
		return base + 4;
	if (len >= 16 && o[0] == FP_TCPOPT_MSS && o[1] == FP_TCPOLEN_MSS &&
	    o[4] == FP_TCPOPT_SACK_PERM && o[5] == FP_TCPOLEN_SACK_PERM &&
	    o[6] == FP_TCPOPT_TS && o[7] == FP_TCPOLEN_TS)
		return base + 8;
	return 0;
}

/*
 * fp_tcp_ts_off returns the offset from the frame's start of the TSval of
 * the TCP packet whose header starts at l4_off, or 0 when it has no
 * timestamp option (or a malformed option list). Options are walked as
 * the kernel does (tcp_parse_options): EOL ends them, NOP is one byte,
 * every other kind has a length of at least 2 that must fit. Linux puts
 * the option where a fixed offset would find it, but other stacks need
 * not: Linux's two layouts are read at once (fp_tcp_ts_linux), any other
 * is walked. The walk is a bpf_loop
 * whose step reads its bytes from the packet: the verifier merges its
 * states, where a plain loop's it cannot (over a million verified
 * instructions). A global function, verified once for its callers.
 */
__attribute__((noinline)) int fp_tcp_ts_off(struct __sk_buff *skb, __u32 l4_off)
{
	struct fp_tcpopt_walk w = {};
	__u8 doff;
	__u32 ts;

	if (!skb || l4_off > FP_HDR_OFF_MAX)
		return 0;
	if (bpf_skb_load_bytes(skb, l4_off + 12, &doff, 1) < 0 || (doff >> 4) <= 5)
		return 0;
	w.skb = skb;
	w.base = l4_off + sizeof(struct tcphdr);
	w.len = (doff >> 4) * 4 - sizeof(struct tcphdr);
	ts = fp_tcp_ts_linux(skb, w.base, w.len);
	if (ts)
		return ts;
	/* Each step consumes a byte at least, so 40 steps see every option. */
	bpf_loop(FP_TCPOPT_MAX, fp_tcpopt_step, &w, 0);
	return w.ts;
}

/* fp_tcp_ts_get reads the 32-bit value at off (TSval, or TSecr at off + 4). */
static __always_inline int fp_tcp_ts_get(struct __sk_buff *skb, __u32 off, __u32 *v)
{
	__be32 raw;

	if (bpf_skb_load_bytes(skb, off, &raw, sizeof(raw)) < 0)
		return -1;
	*v = bpf_ntohl(raw);
	return 0;
}

/*
 * fp_tcp_ts_shift adds delta to the 32-bit value at off (modulo 2^32) and
 * fixes the TCP checksum. The data and the checksum change by opposite
 * amounts, so the sum over the whole packet, skb->csum of a
 * CHECKSUM_COMPLETE packet, stays what it was; a CHECKSUM_PARTIAL packet's
 * checksum field holds only the pseudo header's sum, which this does not
 * touch (bpf_l4_csum_replace leaves it alone without BPF_F_PSEUDO_HDR).
 */
static __always_inline int fp_tcp_ts_shift(struct __sk_buff *skb, const struct fp_pkt *p,
					   __u32 off, __u32 delta)
{
	__be32 from, to;

	if (bpf_skb_load_bytes(skb, off, &from, sizeof(from)) < 0)
		return -1;
	to = bpf_htonl(bpf_ntohl(from) + delta);
	if (bpf_skb_store_bytes(skb, off, &to, sizeof(to), 0) < 0)
		return -1;
	return bpf_l4_csum_replace(skb, p->l4_off + offsetof(struct tcphdr, check), from, to,
				   sizeof(to));
}

/* fp_ts_after: timestamp a is later than b (RFC 7323 arithmetic). */
static __always_inline int fp_ts_after(__u32 a, __u32 b)
{
	return (__s32)(a - b) > 0;
}

#endif /* FASTPATH_TCPTS_H */
