/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* IPv4 addresses in the 16-byte map form (IPv4-mapped, ::ffff:a.b.c.d). */
#ifndef FASTPATH_ADDR_H
#define FASTPATH_ADDR_H

#include <bpf/bpf_endian.h>
#include "fastpath.h"

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

#endif /* FASTPATH_ADDR_H */
