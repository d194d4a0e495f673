/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Maps shared by every fastpath program. They are pinned by name, so each
 * object that includes this header reuses the same kernel maps, and a
 * restarted agent finds the state its predecessor left. Sizes here are
 * defaults; the loader sets the real ones from the agent's configuration.
 */
#ifndef FASTPATH_MAPS_H
#define FASTPATH_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "fastpath.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct fp_svc_key);
	__type(value, struct fp_svc_val);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fp_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct fp_backend);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fp_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct fp_rev_nat);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fp_rev_nat SEC(".maps");

#include "ctmap.h"

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct fp_sock_rev_nat_key);
	__type(value, struct fp_sock_rev_nat);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fp_sock_revnat SEC(".maps");

/* LRU: a client that stops connecting is forgotten, with no GC needed. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct fp_affinity_key);
	__type(value, struct fp_affinity_val);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fp_affinity SEC(".maps");

/* Value unused: presence of a prefix is the answer. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct fp_source_range_key);
	__type(value, __u8);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fp_source_ranges SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct fp_config);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fp_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct fp_metric);
	__uint(max_entries, FP_METRIC_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fp_metrics SEC(".maps");

/* --- cross-node routing: begin --- */
/* The cluster's own addresses (--cluster-cidr): pod traffic to anything
 * else is masqueraded (egress.h). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct fp_cidr_key);
	__type(value, __u8);
	__uint(max_entries, 64);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fp_no_masq SEC(".maps");
/* --- cross-node routing: end --- */

#endif /* FASTPATH_MAPS_H */
