/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Masquerade of pod traffic leaving the cluster (--cluster-cidr), as
 * ip-masq-agent or Cilium's BPF masquerade: a new TCP or UDP flow that
 * arrives on an internal interface (from a pod), comes from an address in
 * fp_no_masq and goes to no Service and to an address outside fp_no_masq
 * leaves with the node's masquerade address and a port of its own. It is
 * the masqueraded-flow path of snat.h with the destination itself as the
 * "backend": the same port search, the same FIB redirect, and replies
 * found by their REPLY entry on whichever interface they come back. Its ct
 * entries have rev_nat_id 0 (no frontend): a reply gets only its
 * destination translated back to the pod.
 *
 * Not masqueraded: ICMP (echo would need its id translated) and SCTP.
 */
#ifndef FASTPATH_EGRESS_H
#define FASTPATH_EGRESS_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "addr.h"
#include "maps.h"
#include "pkt.h"
#include "ct.h"
#include "snat.h"

static __always_inline int fp_in_cluster(__be32 addr)
{
	struct fp_cidr_key key = {.prefixlen = 128};

	fp_addr_set_v4(&key.addr, addr);
	return bpf_map_lookup_elem(&fp_no_masq, &key) != NULL;
}

/*
 * fp_egress_pick fills c for p, a packet to no Service, when its flow must
 * be masqueraded, and returns whether it must.
 */
static __always_inline int fp_egress_pick(const struct fp_pkt *p, struct fp_choice *c)
{
	const struct fp_config *cfg;

	if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP)
		return 0;
	cfg = fp_config_get();
	if (!cfg || !(cfg->flags & FP_CONFIG_F_EGRESS_MASQ) || !fp_in_cluster(p->saddr) ||
	    fp_in_cluster(p->daddr))
		return 0;
	c->addr = p->daddr;
	c->port = bpf_ntohs(p->dport);
	c->egress = 1;
	return 1;
}

#endif /* FASTPATH_EGRESS_H */
