/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * fp_ct alone (maps.h has the rest of tc_lb's maps): tc_policy reads it to
 * give a redirected Service flow its frontend back (docs/l7.md). The
 * loader sizes it (--ct-max) for every object that has it.
 */
#ifndef FASTPATH_CTMAP_H
#define FASTPATH_CTMAP_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "fastpath.h"

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct fp_ct_key);
	__type(value, struct fp_ct_entry);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fp_ct SEC(".maps");

#endif /* FASTPATH_CTMAP_H */
