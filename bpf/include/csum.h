/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Internet checksum helpers for the TC datapath. Incremental updates of
 * packets in place go through bpf_l3_csum_replace/bpf_l4_csum_replace, which
 * also keep skb->csum right for CHECKSUM_COMPLETE; what is here computes
 * checksums of headers the program builds itself.
 */
#ifndef FASTPATH_CSUM_H
#define FASTPATH_CSUM_H

#include <linux/types.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>

/* fp_csum_fold turns a 32-bit partial sum (as bpf_csum_diff returns it) into
 * the checksum to store. Sums are of words as they lie in memory, so the
 * result is stored as is, without a byte swap. */
static __always_inline __sum16 fp_csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__sum16)~sum;
}

/* fp_l4_csum_off returns the offset of the transport checksum inside the
 * transport header, or -1 when the protocol has no pseudo-header checksum
 * (SCTP uses CRC32c over its own bytes only). */
static __always_inline int fp_l4_csum_off(__u8 proto)
{
	switch (proto) {
	case IPPROTO_TCP:
		return offsetof(struct tcphdr, check);
	case IPPROTO_UDP:
		return offsetof(struct udphdr, check);
	}
	return -1;
}

/* fp_l4_csum_flags: a UDP checksum of 0 means "none" and must stay 0, and a
 * computed 0 must be written as 0xffff. */
static __always_inline __u64 fp_l4_csum_flags(__u8 proto)
{
	return proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
}

#endif /* FASTPATH_CSUM_H */
