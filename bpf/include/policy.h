/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * NetworkPolicy enforcement: map layouts, maps and the per-packet check
 * (docs/policy-datapath.md), used by tc_policy and by tc_lb (for the
 * packets it redirects itself). The Go twins are internal/datapath/policymap,
 * checked against tc_policy's BTF.
 */
#ifndef FASTPATH_POLICY_H
#define FASTPATH_POLICY_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "fastpath.h"
#include "addr.h"
#include "pkt.h"
#include "verdict.h"

/* Reserved identities (internal/identity). */
#define FP_ID_ANY 0
#define FP_ID_WORLD_V4 9

/* ipcache: longest prefix of the peer address -> identity. prefixlen counts
 * bits of addr (IPv4-mapped: an IPv4 /n is 96 + n). */
struct fp_ipcache_key {
	__u32 prefixlen;
	union fp_addr addr;
};

struct fp_ipcache_val {
	__u32 identity;
	__u32 flags;
};

/* endpoints: host-veth ifindex -> the pod behind it. */
struct fp_endpoint {
	__u16 id;
	__u16 flags; /* FP_EP_F_* */
	__u32 identity;
	__be32 addr4; /* the pod's IPv4 address; 0: not known, not checked */
};

#define FP_EP_F_ENFORCE_INGRESS (1 << 0)
#define FP_EP_F_ENFORCE_EGRESS (1 << 1)

/* policy: LPM on {identity, endpoint, dir, proto, port}. prefixlen 56 =
 * every protocol, 64 = every port of proto, 80 = one port; between 64 and
 * 80 an aligned port block. port is big-endian so its blocks are prefixes. */
struct fp_policy_key {
	__u32 prefixlen;
	__u32 identity;
	__u16 endpoint;
	__u8 dir;
	__u8 proto;
	__be16 port;
	__u16 pad;
};

#define FP_POLICY_PREFIX_ANY_PROTO 56
#define FP_POLICY_PREFIX_FULL 80

struct fp_policy_val {
	__u32 cookie;     /* the rule, in the agent's table */
	__u16 proxy_port; /* FP_POLICY_F_L7: the node's L7 proxy listener (0: none) */
	__u16 flags;      /* FP_POLICY_F_* */
};

/* The flows of this entry carry HTTP rules: they go to the L7 proxy
 * (docs/l7.md); with proxy_port 0 (no proxy on the node) they are dropped. */
#define FP_POLICY_F_L7 (1 << 0)

/* skb->mark of the proxy's upstream sockets (SO_MARK): the datapath never
 * redirects them again, and the server's ingress was judged by the proxy.
 * FP_PROXY_MARK_REDIRECT is what a redirected packet gets for the node's
 * "fwmark -> local" policy route, so the stack delivers it to the proxy's
 * socket instead of forwarding it. Both sit in bits no other part of the
 * node is known to use (Cilium's magic marks use 0x0f00). */
#define FP_PROXY_MARK_UPSTREAM 0x0fa70000
#define FP_PROXY_MARK_REDIRECT 0x0fa80000
/* FP_PROXY_MARK_HOST | proxy port: a packet of a flow from the node
 * itself that tc_policy's INGRESS instance sent back into the pod's host
 * veth (its TC ingress), where the EGRESS instance hands it to the proxy
 * (tc_policy.c, fp_proxy_host). */
#define FP_PROXY_MARK_HOST 0x0fa90000
#define FP_PROXY_MARK_MASK 0xffff0000

/* policy ct: flows an endpoint let through, both directions of each. */
struct fp_pct_key {
	union fp_addr saddr;
	union fp_addr daddr;
	__u16 sport; /* host byte order */
	__u16 dport;
	__u8 proto;
	__u8 dir; /* FP_CT_FORWARD, FP_CT_REPLY */
	__u16 endpoint;
};

struct fp_pct_val {
	__u64 expires; /* bpf_ktime_get_ns */
	__u32 cookie;
	__u32 flags;
};

/* Lifetimes of policy ct entries, refreshed by every packet. A TCP FIN or
 * RST marks both entries of a flow closing: they keep the short lifetime
 * from then on, so closed flows leave the LRU room soon. */
#define FP_PCT_LIFETIME_TCP (6ULL * 3600 * 1000000000)
#define FP_PCT_LIFETIME_OTHER (60ULL * 1000000000)
#define FP_PCT_LIFETIME_CLOSING (10ULL * 1000000000)
#define FP_PCT_F_CLOSING (1 << 0)
/* The flow goes to the L7 proxy; the port is flags >> 16. */
#define FP_PCT_F_PROXY (1 << 1)
#define FP_PCT_PROXY_SHIFT 16

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct fp_ipcache_key);
	__type(value, struct fp_ipcache_val);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fp_ipcache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct fp_endpoint);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fp_endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct fp_policy_key);
	__type(value, struct fp_policy_val);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fp_policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct fp_pct_key);
	__type(value, struct fp_pct_val);
	__uint(max_entries, 262144);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fp_policy_ct SEC(".maps");

static __always_inline __u32 fp_ipcache_identity(__be32 ip)
{
	struct fp_ipcache_key k = {.prefixlen = 128};
	struct fp_ipcache_val *v;

	fp_addr_set_v4(&k.addr, ip);
	v = bpf_map_lookup_elem(&fp_ipcache, &k);
	return v ? v->identity : FP_ID_WORLD_V4;
}

static __always_inline void fp_pct_key_set(struct fp_pct_key *k, const struct fp_pflow *f, __u8 dir, __u16 ep)
{
	fp_addr_set_v4(&k->saddr, f->saddr);
	fp_addr_set_v4(&k->daddr, f->daddr);
	k->sport = f->sport;
	k->dport = f->dport;
	k->proto = f->proto;
	k->dir = dir;
	k->endpoint = ep;
}

static __always_inline __u64 fp_pct_lifetime(__u8 proto, __u32 flags)
{
	if (flags & FP_PCT_F_CLOSING)
		return FP_PCT_LIFETIME_CLOSING;
	return proto == IPPROTO_TCP ? FP_PCT_LIFETIME_TCP : FP_PCT_LIFETIME_OTHER;
}

/* fp_pct_close marks the twin entry (the other direction) closing too. */
static __always_inline void fp_pct_close_twin(const struct fp_pct_key *k, __u64 now)
{
	struct fp_pct_key t = *k;
	struct fp_pct_val *v;

	t.saddr = k->daddr;
	t.daddr = k->saddr;
	t.sport = k->dport;
	t.dport = k->sport;
	t.dir = k->dir == FP_CT_FORWARD ? FP_CT_REPLY : FP_CT_FORWARD;
	v = bpf_map_lookup_elem(&fp_policy_ct, &t);
	if (v && !(v->flags & FP_PCT_F_CLOSING)) {
		v->flags |= FP_PCT_F_CLOSING;
		if (v->expires > now + FP_PCT_LIFETIME_CLOSING)
			v->expires = now + FP_PCT_LIFETIME_CLOSING;
	}
}

/* fp_pct_find: the flow (either direction) is one the endpoint let
 * through; a live entry is refreshed, and a FIN or RST (tcp_flags) closes
 * it. Returns 0 (none), 1 (found) or, for a FORWARD packet of a flow the
 * proxy takes, the proxy's port + 2 (> 1). */
static __always_inline __u32 fp_pct_find(const struct fp_pflow *f, __u16 ep, __u8 tcp_flags)
{
	struct fp_pct_key k = {};
	struct fp_pct_val *v;
	__u64 now = bpf_ktime_get_ns();

	fp_pct_key_set(&k, f, FP_CT_FORWARD, ep);
	v = bpf_map_lookup_elem(&fp_policy_ct, &k);
	if (!v || v->expires < now) {
		k.dir = FP_CT_REPLY;
		v = bpf_map_lookup_elem(&fp_policy_ct, &k);
	}
	if (!v || v->expires < now)
		return 0;
	if (f->proto == IPPROTO_TCP && (tcp_flags & (FP_TCP_FIN | FP_TCP_RST)) && !(v->flags & FP_PCT_F_CLOSING)) {
		v->flags |= FP_PCT_F_CLOSING;
		fp_pct_close_twin(&k, now);
	}
	v->expires = now + fp_pct_lifetime(f->proto, v->flags);
	if (k.dir == FP_CT_FORWARD && (v->flags & FP_PCT_F_PROXY))
		return (v->flags >> FP_PCT_PROXY_SHIFT) + 2;
	return 1;
}

static __always_inline int fp_pct_hit(const struct fp_pflow *f, __u16 ep, __u8 tcp_flags)
{
	return fp_pct_find(f, ep, tcp_flags) != 0;
}

static __always_inline int fp_pct_create(const struct fp_pflow *f, __u16 ep, __u32 cookie, __u16 proxy_port)
{
	struct fp_pct_key k = {};
	struct fp_pflow r = {.saddr = f->daddr, .daddr = f->saddr, .sport = f->dport, .dport = f->sport, .proto = f->proto};
	struct fp_pct_val v = {.cookie = cookie};

	v.expires = bpf_ktime_get_ns() + fp_pct_lifetime(f->proto, 0);
	fp_pct_key_set(&k, &r, FP_CT_REPLY, ep);
	if (bpf_map_update_elem(&fp_policy_ct, &k, &v, BPF_ANY) < 0)
		return -1;
	if (proxy_port)
		v.flags = FP_PCT_F_PROXY | ((__u32)proxy_port << FP_PCT_PROXY_SHIFT);
	fp_pct_key_set(&k, f, FP_CT_FORWARD, ep);
	return bpf_map_update_elem(&fp_policy_ct, &k, &v, BPF_ANY);
}

/* fp_policy_lookup: the rule allowing identity to reach the endpoint's
 * port, or NULL. Exact identity first, then the any-identity entries. */
static __always_inline struct fp_policy_val *fp_policy_lookup(__u32 identity, __u16 ep, __u8 dir, __u8 proto, __u16 port)
{
	struct fp_policy_key k = {
		.prefixlen = FP_POLICY_PREFIX_FULL,
		.identity = identity,
		.endpoint = ep,
		.dir = dir,
		.proto = proto,
		.port = bpf_htons(port),
	};
	struct fp_policy_val *v = bpf_map_lookup_elem(&fp_policy, &k);

	if (v)
		return v;
	k.identity = FP_ID_ANY;
	return bpf_map_lookup_elem(&fp_policy, &k);
}

/* fp_starts_flow: whether packet f (tcp_flags its TCP flags) can open a
 * flow. A reply can also miss fp_policy_ct, when tc_lb rewrote its source
 * back to a Service address after the flow was recorded with the backend's:
 * a TCP SYN-ACK or an ICMP error is never recorded as a new flow. */
static __always_inline int fp_starts_flow(const struct fp_pflow *f, __u8 tcp_flags)
{
	if (f->proto == IPPROTO_TCP)
		return (tcp_flags & (FP_TCP_SYN | FP_TCP_ACK)) == FP_TCP_SYN;
	return f->proto != IPPROTO_ICMP;
}

/* fp_forwarded records, sampled like allows, new flow f delivered to
 * endpoint ep with no ingress policy: the flow map's allowed flows of pods
 * no policy selects. The peer's identity is looked up only when sampled. */
static __always_inline void fp_forwarded(const struct fp_pflow *f, const struct fp_endpoint *ep)
{
	if (fp_verdict_wanted(FP_VERDICT_ALLOW))
		fp_verdict_write(f, fp_ipcache_identity(f->saddr), ep->identity, ep->id, FP_DIR_INGRESS,
				 FP_VERDICT_ALLOW, FP_REASON_FORWARDED, 0);
}

/*
 * fp_policy_judge decides flow f (one packet, tcp_flags its TCP flags) of
 * endpoint ep in direction dir: 1 pass, 0 drop (with a verdict event).
 *   - The direction open: the flow is recorded and passes, or the other
 *     direction's hook would judge its replies as new flows (an egress
 *     policy must not cut replies to clients), and a policy selecting the
 *     pod later would cut it (policy judges new flows only).
 *   - A packet of a flow the endpoint already let through, either way,
 *     passes: replies need no rule.
 *   - Otherwise the peer's identity and the destination port are looked up
 *     in fp_policy; a hit records the flow and passes, a miss drops.
 * tc_policy calls it for what tc_lb hands on; tc_lb calls it itself for the
 * packets it redirects (masquerade), which never reach tc_policy.
 */
static __always_inline int fp_policy_judge_l7(const struct fp_endpoint *ep, const struct fp_pflow *f,
					      __u8 tcp_flags, __u8 dir, __u16 *proxy_port)
{
	__u16 flag = dir == FP_DIR_INGRESS ? FP_EP_F_ENFORCE_INGRESS : FP_EP_F_ENFORCE_EGRESS;
	struct fp_policy_val *rule;
	__u32 peer_id, src_id, dst_id, found;
	__u16 port = 0;

	if (!(ep->flags & flag)) {
		if (!fp_pct_hit(f, ep->id, tcp_flags)) {
			fp_pct_create(f, ep->id, 0, 0);
			if (dir == FP_DIR_INGRESS && fp_starts_flow(f, tcp_flags))
				fp_forwarded(f, ep);
		}
		return 1;
	}
	found = fp_pct_find(f, ep->id, tcp_flags);
	if (found > 1) {
		if (!proxy_port)
			return 0;
		*proxy_port = found - 2;
		return 1;
	}
	if (found)
		return 1;
	peer_id = fp_ipcache_identity(dir == FP_DIR_EGRESS ? f->daddr : f->saddr);
	src_id = dir == FP_DIR_EGRESS ? ep->identity : peer_id;
	dst_id = dir == FP_DIR_EGRESS ? peer_id : ep->identity;
	rule = fp_policy_lookup(peer_id, ep->id, dir, f->proto, f->dport);
	if (!rule) {
		fp_pmetric_inc(FP_PMETRIC_DROPPED);
		fp_verdict_emit(f, src_id, dst_id, ep->id, dir, FP_VERDICT_DROP, FP_REASON_POLICY_DENIED, 0);
		return 0;
	}
	if (rule->flags & FP_POLICY_F_L7) {
		/* To the proxy, or dropped where it cannot go (no proxy on the
		 * node, or a caller that cannot redirect): fail closed. */
		port = rule->proxy_port;
		if (!port || !proxy_port || f->proto != IPPROTO_TCP) {
			fp_pmetric_inc(FP_PMETRIC_DROPPED);
			fp_verdict_emit(f, src_id, dst_id, ep->id, dir, FP_VERDICT_DROP, FP_REASON_NO_PROXY, rule->cookie);
			return 0;
		}
		*proxy_port = port;
	}
	if (fp_pct_create(f, ep->id, rule->cookie, port) < 0) {
		/* Untracked, its replies would be judged as new flows: fail closed. */
		fp_verdict_emit(f, src_id, dst_id, ep->id, dir, FP_VERDICT_DROP, FP_REASON_CT_FULL, rule->cookie);
		return 0;
	}
	fp_verdict_emit(f, src_id, dst_id, ep->id, dir, FP_VERDICT_ALLOW,
			port ? FP_REASON_PROXY_REDIRECT : FP_REASON_POLICY_ALLOWED, rule->cookie);
	return 1;
}

/* fp_policy_judge is fp_policy_judge_l7 for callers that cannot redirect
 * to the proxy: flows that need it are dropped. */
static __always_inline int fp_policy_judge(const struct fp_endpoint *ep, const struct fp_pflow *f,
					   __u8 tcp_flags, __u8 dir)
{
	return fp_policy_judge_l7(ep, f, tcp_flags, dir, 0);
}

/* fp_policy_endpoint: the endpoint behind ifindex, or NULL. */
static __always_inline struct fp_endpoint *fp_policy_endpoint(__u32 ifindex)
{
	return bpf_map_lookup_elem(&fp_endpoints, &ifindex);
}

/* fp_policy_enforced: the endpoint behind ifindex, when any direction of
 * it is enforced; NULL otherwise (policy has nothing to say). */
static __always_inline struct fp_endpoint *fp_policy_enforced(__u32 ifindex)
{
	struct fp_endpoint *ep = bpf_map_lookup_elem(&fp_endpoints, &ifindex);

	if (!ep || !(ep->flags & (FP_EP_F_ENFORCE_INGRESS | FP_EP_F_ENFORCE_EGRESS)))
		return NULL;
	return ep;
}

#endif /* FASTPATH_POLICY_H */
