// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Socket-level load balancing for IPv4: a client in the attached cgroup
 * subtree that connects (or sends a datagram) to a service VIP is handed a
 * backend address before any packet exists, so no per-packet NAT is needed.
 * recvmsg and getpeername translate the backend back to the VIP, so the
 * application only ever sees the address it asked for.
 *
 * Only TCP and UDP are translated; anything else (SCTP) is left to the TC
 * datapath, which handles it per packet.
 *
 * Local processes are inside the cluster: they see a service's INTERNAL
 * entry where there is one, its EXTERNAL entry otherwise (service.h).
 *
 * Session affinity (affinity.h) knows a client by its network namespace
 * cookie: every socket of a pod is one client, whatever its source address
 * will be, as in Cilium. Each connect() and each unconnected sendto() is a
 * new connection: it follows and refreshes the memory.
 *
 * The reverse-translation entries (fp_sock_revnat) are keyed by socket
 * cookie and backend. A connected socket's entry is deleted when the socket
 * is released (fp_sock_release): one TCP connect() writes one, and without
 * that a busy client would keep the LRU map full, evicting the entries of
 * long-lived UDP sockets, whose replies would then show the backend. The
 * entries of unconnected sockets (sendto() to VIPs, one per backend) cannot
 * be found at release and are left to the LRU.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/errno.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "addr.h"
#include "maps.h"
#include "affinity.h"
#include "service.h"
#include "verdict.h"

/* Return values of cgroup sock_addr and sock programs. */
#define SYS_REJECT 0
#define SYS_PROCEED 1

#define FP_AF_INET 2

static __always_inline void metric_inc(__u32 idx)
{
	struct fp_metric *m = bpf_map_lookup_elem(&fp_metrics, &idx);

	/* Programs of this type can be preempted on the same CPU. */
	if (m)
		__sync_fetch_and_add(&m->packets, 1);
}

static __always_inline int proto_handled(__u32 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP;
}


/*
 * record_revnat remembers, per socket and backend, which frontend the socket
 * asked for. Returns 0 or a negative errno.
 */
static __always_inline int record_revnat(struct bpf_sock_addr *ctx,
					 const struct fp_backend *be,
					 const struct fp_svc_key *svc,
					 __u32 rev_nat_id)
{
	struct fp_sock_rev_nat_key key = {};
	struct fp_sock_rev_nat val = {};

	key.cookie = bpf_get_socket_cookie(ctx);
	key.addr = be->addr;
	key.port = be->port;
	val.addr = svc->addr;
	val.port = svc->port;
	val.scope = svc->scope;
	val.rev_nat_id = rev_nat_id;
	return bpf_map_update_elem(&fp_sock_revnat, &key, &val, BPF_ANY);
}

/*
 * record_no_backend writes the verdict record of a connect()/sendmsg()
 * refused for want of backends (verdict.h), within the drop records'
 * budget. The socket is not bound yet, so the record has no source.
 */
static __always_inline void record_no_backend(__u32 ip4, __u16 port, __u8 proto, __u32 rev_nat_id)
{
	struct fp_pflow f = {.daddr = ip4, .dport = port, .proto = proto};

	if (fp_verdict_wanted(FP_VERDICT_DROP))
		fp_verdict_write(&f, 0, 0, 0, FP_DIR_EGRESS, FP_VERDICT_DROP, FP_REASON_LB_NO_BACKEND, rev_nat_id);
}

/*
 * xlate_fwd rewrites a VIP destination to a backend. Returns SYS_PROCEED
 * (translated or not a service) or SYS_REJECT with the errno set for the
 * caller of connect()/sendmsg().
 */
static __always_inline int xlate_fwd(struct bpf_sock_addr *ctx)
{
	struct fp_affinity_key ak = {};
	struct fp_svc_key key;
	struct fp_svc_val *svc, *slot;
	struct fp_backend *be;
	__u32 proto = ctx->protocol;
	__u32 ip4 = ctx->user_ip4;
	__u16 port = bpf_ntohs((__u16)ctx->user_port);
	__u32 rev_nat_id;
	__u16 count, slot_nr;

	if (!proto_handled(proto))
		return SYS_PROCEED;

	fp_addr_set_v4(&key.addr, ip4);
	key.port = port;
	key.proto = (__u8)proto;
	svc = fp_svc_lookup(&key, 1);
	if (!svc)
		return SYS_PROCEED;

	count = svc->count;
	rev_nat_id = svc->rev_nat_id;
	if (count == 0) {
		/* What kube-proxy's REJECT gives the client. */
		metric_inc(FP_METRIC_SOCK_NO_BACKEND);
		record_no_backend(ip4, port, (__u8)proto, rev_nat_id);
		bpf_set_retval(-ECONNREFUSED);
		return SYS_REJECT;
	}

	ak.netns_cookie = bpf_get_netns_cookie(ctx);
	ak.rev_nat_id = rev_nat_id;
	slot = fp_slot_pick(&key, svc, &ak);
	if (!slot)
		goto gone;
	be = bpf_map_lookup_elem(&fp_backends, &slot->backend_id);
	if (!be || !fp_addr_is_v4(&be->addr))
		goto gone;

	slot_nr = key.slot;
	key.slot = 0;
	if (record_revnat(ctx, be, &key, rev_nat_id) < 0 && proto == IPPROTO_UDP) {
		/*
		 * Without the entry, replies would show the backend as source
		 * and resolvers that check it would drop them: refuse instead.
		 */
		bpf_set_retval(-ENOMEM);
		return SYS_REJECT;
	}
	if (fp_affinity_on(svc))
		fp_affinity_remember(&ak, slot->backend_id, slot_nr);

	ctx->user_ip4 = be->addr.w[3];
	ctx->user_port = bpf_htons(be->port);
	metric_inc(FP_METRIC_SOCK_CONNECT);
	return SYS_PROCEED;

gone:
	/*
	 * A reconciler is mid-update. Leave the destination alone: the TC
	 * datapath still sees the VIP and can balance it per packet.
	 */
	metric_inc(FP_METRIC_DROP_BACKEND_GONE);
	return SYS_PROCEED;
}

/*
 * xlate_rev shows the frontend instead of the backend a socket was given.
 * An entry whose frontend no longer exists, or now belongs to another service
 * (different rev_nat_id), is stale: it is deleted and the backend shown.
 */
static __always_inline int xlate_rev(struct bpf_sock_addr *ctx)
{
	struct fp_sock_rev_nat_key key = {};
	struct fp_sock_rev_nat *rev;
	struct fp_svc_key skey;
	struct fp_svc_val *svc;
	__u32 proto = ctx->protocol;

	if (!proto_handled(proto))
		return SYS_PROCEED;

	key.cookie = bpf_get_socket_cookie(ctx);
	fp_addr_set_v4(&key.addr, ctx->user_ip4);
	key.port = bpf_ntohs((__u16)ctx->user_port);
	rev = bpf_map_lookup_elem(&fp_sock_revnat, &key);
	if (!rev)
		return SYS_PROCEED;

	skey.addr = rev->addr;
	skey.port = rev->port;
	skey.proto = (__u8)proto;
	skey.scope = rev->scope;
	skey.slot = 0;
	skey.pad = 0;
	svc = bpf_map_lookup_elem(&fp_services, &skey);
	if (!svc || svc->rev_nat_id != rev->rev_nat_id) {
		bpf_map_delete_elem(&fp_sock_revnat, &key);
		return SYS_PROCEED;
	}

	ctx->user_ip4 = rev->addr.w[3];
	ctx->user_port = bpf_htons(rev->port);
	return SYS_PROCEED;
}

SEC("cgroup/connect4")
int fp_sock_connect4(struct bpf_sock_addr *ctx)
{
	return xlate_fwd(ctx);
}

/* Unconnected UDP: each sendto() to a VIP is balanced on its own. */
SEC("cgroup/sendmsg4")
int fp_sock_sendmsg4(struct bpf_sock_addr *ctx)
{
	return xlate_fwd(ctx);
}

/* Runs only for UDP; recvmsg and getpeername programs must return 1. */
SEC("cgroup/recvmsg4")
int fp_sock_recvmsg4(struct bpf_sock_addr *ctx)
{
	xlate_rev(ctx);
	return SYS_PROCEED;
}

SEC("cgroup/getpeername4")
int fp_sock_getpeername4(struct bpf_sock_addr *ctx)
{
	xlate_rev(ctx);
	return SYS_PROCEED;
}

/*
 * fp_sock_release deletes the reverse-translation entry of a connected IPv4
 * TCP or UDP socket as it is released (close() of its last reference; the
 * hook runs before the protocol's close, so the socket still names its
 * peer): the key is its cookie and the peer it is connected to, which for a
 * translated socket is the backend. A socket that was never translated has
 * no entry: the delete finds nothing. Release programs must return 1.
 */
SEC("cgroup/sock_release")
int fp_sock_release(struct bpf_sock *sk)
{
	struct fp_sock_rev_nat_key key = {};

	if (sk->family != FP_AF_INET || !proto_handled(sk->protocol) || !sk->dst_port)
		return SYS_PROCEED;
	key.cookie = bpf_get_socket_cookie(sk);
	fp_addr_set_v4(&key.addr, sk->dst_ip4);
	key.port = bpf_ntohs(sk->dst_port);
	bpf_map_delete_elem(&fp_sock_revnat, &key);
	return SYS_PROCEED;
}

char __license[] SEC("license") = "Dual BSD/GPL";
