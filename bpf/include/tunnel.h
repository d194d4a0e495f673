/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The tunnel map: which node (underlay address) holds a pod CIDR. Written by
 * the agent's routing reconciler from Node objects (spec.podCIDRs and the
 * InternalIP); read by tc_tunnel. Only tc_tunnel's object declares it.
 */
#ifndef FASTPATH_TUNNEL_H
#define FASTPATH_TUNNEL_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "fastpath.h"

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct fp_cidr_key);
	__type(value, struct fp_tunnel_endpoint);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fp_tunnel_map SEC(".maps");

#endif /* FASTPATH_TUNNEL_H */
