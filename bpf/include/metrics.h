/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Per-CPU outcome counters of the TC datapath (fp_metrics). */
#ifndef FASTPATH_METRICS_H
#define FASTPATH_METRICS_H

#include "maps.h"

/* TC ingress runs in softirq context (bottom halves disabled), so no other
 * TC program interleaves on this CPU: plain per-CPU increments suffice. */
static __always_inline void fp_metric_add(__u32 idx, __u32 bytes)
{
	struct fp_metric *m = bpf_map_lookup_elem(&fp_metrics, &idx);

	if (m) {
		m->packets++;
		m->bytes += bytes;
	}
}

#endif /* FASTPATH_METRICS_H */
