/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Shared types of the fastpath datapath. Every struct here has a Go twin in
 * internal/datapath/lbmap or internal/datapath/ctmap with the same byte layout;
 * change both together and bump FP_MAP_LAYOUT_VERSION.
 *
 * Addresses are 16 bytes everywhere so IPv6 can share the layouts: an IPv4
 * address is stored IPv4-mapped (::ffff:a.b.c.d). Ports in map keys and values
 * are in HOST byte order, so Go writes plain integers.
 */
#ifndef FASTPATH_H
#define FASTPATH_H

#include <linux/types.h>

/* 2: fp_ct_entry grew the SNAT fields, fp_sock_rev_nat the scope, fp_config
 * is new, and fp_metrics has two more counters.
 * 3: fp_source_ranges is new, with FP_SVC_F_SOURCE_RANGES and
 * FP_CT_F_NODEPORT, and fp_metrics has one more counter.
 * 4: fp_policy_val grew proxy_port and flags (L7 policy).
 * 5: fp_endpoint grew addr4 (source validation), fp_metrics has one more
 * counter.
 * 6: fp_ct_entry grew ts_delta and ts_last, with FP_CT_F_TS (timestamp
 * translation of flows that take over a closed flow's tuple, ct.h). */
#define FP_MAP_LAYOUT_VERSION 6

union fp_addr {
	__u8 b[16];
	__u32 w[4];
};

/* services: slot 0 is the service entry, slot n (1..count) names a backend. */
struct fp_svc_key {
	union fp_addr addr;
	__u16 port;
	__u8 proto;  /* IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP */
	__u8 scope;  /* FP_SCOPE_* */
	__u16 slot;
	__u16 pad;
};

/*
 * Which traffic a service entry serves. Traffic from inside the cluster
 * (internal interfaces, local sockets) gets INTERNAL where it exists and
 * EXTERNAL otherwise; traffic from outside (external interfaces) sees only
 * EXTERNAL. The control plane writes an INTERNAL entry only where internal
 * traffic must get other backends than external traffic (traffic policies),
 * always with an EXTERNAL twin that carries FP_SVC_F_INTERNAL_TWIN: the
 * datapath looks up INTERNAL only then (service.h).
 */
#define FP_SCOPE_EXTERNAL 0
#define FP_SCOPE_INTERNAL 1

struct fp_svc_val {
	__u32 backend_id;       /* slot n: the backend; slot 0: 0 */
	__u16 count;            /* slot 0: number of backend slots */
	__u16 flags;            /* slot 0: FP_SVC_F_* */
	__u32 rev_nat_id;       /* slot 0: key into rev_nat */
	__u32 affinity_timeout; /* slot 0: seconds, 0 = no session affinity */
};

#define FP_SVC_F_AFFINITY (1 << 0)
#define FP_SVC_F_NODEPORT (1 << 1)
#define FP_SVC_F_EXTERNAL_IP (1 << 2)
#define FP_SVC_F_LOADBALANCER (1 << 3)
/* externalTrafficPolicy: Local. Traffic from external interfaces keeps its
 * source address (no masquerade); the control plane gives the EXTERNAL entry
 * only node-local backends. */
#define FP_SVC_F_EXT_LOCAL (1 << 4)
/* loadBalancerSourceRanges: new flows are taken only from sources that
 * fp_source_ranges holds for the entry's rev_nat_id; others are dropped. */
#define FP_SVC_F_SOURCE_RANGES (1 << 5)
/* On an EXTERNAL entry: an INTERNAL entry exists for the same address,
 * port and protocol, for traffic from inside the cluster. Only the meaning
 * of a spare bit: programs that predate it look up INTERNAL regardless, so
 * the layout version stays. */
#define FP_SVC_F_INTERNAL_TWIN (1 << 6)

/*
 * The role of the interface a tc_lb instance is attached to; a load-time
 * constant of each program instance (fp_iface_role in tc_lb.c).
 */
#define FP_ROLE_INTERNAL 0 /* pods and other in-cluster clients */
#define FP_ROLE_EXTERNAL 1 /* the node's uplinks: NodePort/LB/externalIP traffic */

/* TCX_NEXT: the next program on the hook decides (tc_policy after tc_lb).
 * Same value as TC_ACT_UNSPEC, which continues to the next clsact filter. */
#define FP_TCX_NEXT (-1)

/* backends: id -> where to send. */
struct fp_backend {
	union fp_addr addr;
	__u16 port;
	__u8 proto;
	__u8 state; /* FP_BACKEND_* */
	__u32 pad;
};

#define FP_BACKEND_ACTIVE 0
#define FP_BACKEND_TERMINATING 1
#define FP_BACKEND_QUARANTINED 2

/* --- cross-node routing (internal/routing): begin --- */
/*
 * An LPM trie key over the 16-byte address form; an IPv4 prefix /n has
 * prefixlen 96 + n (the IPv4-mapped bits count too).
 */
struct fp_cidr_key {
	__u32 prefixlen;
	union fp_addr addr;
};

/* tunnel map: a pod CIDR -> the underlay address of the node that has it. */
struct fp_tunnel_endpoint {
	union fp_addr node;
};

/* The VXLAN network identifier of fastpath's tunnel. */
#define FP_TUNNEL_VNI 2
/* --- cross-node routing: end --- */

/* rev_nat: rev_nat_id -> the frontend replies must appear to come from. */
struct fp_rev_nat {
	union fp_addr addr;
	__u16 port;
	__u16 pad;
};

/*
 * ct: one entry per direction of a load-balanced flow.
 * FORWARD key is the client's original tuple (client -> VIP); its value holds
 * the chosen backend's address, so an established flow keeps its backend even
 * after the backend is removed from the service or the agent restarts.
 * REPLY key is the backend's tuple (backend -> client); its value names the
 * rev_nat entry that turns the source back into the VIP.
 *
 * A masqueraded flow (FP_CT_F_SNAT) also has its source translated to the
 * node's masquerade address and a port of its own. Its REPLY key is then
 * backend -> masquerade address:port, and snat_addr/snat_port hold the other
 * side of that translation in both entries (see the fields). A flow whose
 * backend tuple clashed with another flow's (FP_CT_F_SNAT | FP_CT_F_SNAT_PORT)
 * is the same with the client's own address in place of the masquerade
 * address: only its source port changes.
 */
struct fp_ct_key {
	union fp_addr saddr;
	union fp_addr daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 dir; /* FP_CT_FORWARD, FP_CT_REPLY */
	__u16 pad;
};

#define FP_CT_FORWARD 0
#define FP_CT_REPLY 1

struct fp_ct_entry {
	union fp_addr nat_addr;  /* FORWARD: backend; REPLY: frontend (VIP) */
	__u16 nat_port;          /* FORWARD: backend port; REPLY: frontend port */
	__u16 flags;             /* FP_CT_F_* */
	__u32 rev_nat_id;
	__u32 backend_id;
	__u16 snat_port;         /* FP_CT_F_SNAT only, see snat_addr */
	__u16 pad;
	union fp_addr snat_addr; /* FP_CT_F_SNAT: FORWARD: the address the
				  * source becomes (masquerade address, or the
				  * client's own with FP_CT_F_SNAT_PORT); REPLY:
				  * the client's address the destination goes
				  * back to */
	__u64 expires;           /* bpf_ktime_get_boot_ns() deadline */
	__u64 packets;
	__u64 bytes;
	__u32 ts_delta;          /* added to TSval client -> backend, taken
				  * from TSecr backend -> client; 0: none */
	__u32 ts_last;           /* REPLY, FP_CT_F_TS: the last TSval the
				  * backend got from the client once the flow
				  * was closing, as sent (ct.h) */
};

#define FP_CT_F_SEEN_REPLY (1 << 0) /* REPLY entries only: a reply went through */
#define FP_CT_F_CLOSING (1 << 1)    /* FIN or RST seen */
#define FP_CT_F_SNAT (1 << 2)       /* source translated: snat_addr/port are set */
/* With FP_CT_F_SNAT: only the source port is translated, the address stays
 * the client's (snat_addr). The flow's tuple at the backend clashed with
 * another flow's (ct.h); its packets go to the stack like plain DNAT ones.
 * FP_CT_F_SNAT alone is a masqueraded flow (snat.h). */
#define FP_CT_F_SNAT_PORT (1 << 3)
/* Both entries of a flow to a NodePort frontend. Its replies get one of the
 * node's own addresses as source, which the stack would drop as a martian
 * (fib_validate_source): they leave through a FIB lookup and a redirect,
 * like masqueraded requests (snat.h). */
#define FP_CT_F_NODEPORT (1 << 4)
/* REPLY entries only: ts_last holds the client's last timestamp of a
 * closing flow, which a new flow needs to take over the tuple (ct.h). */
#define FP_CT_F_TS (1 << 5)

#define FP_NSEC_PER_SEC 1000000000ULL

/* Lifetimes follow Cilium's defaults, in seconds, but for TIME_WAIT. */
#define FP_CT_LIFETIME_TCP 21600
#define FP_CT_LIFETIME_TCP_SYN 60
#define FP_CT_LIFETIME_TCP_CLOSE 10
#define FP_CT_LIFETIME_NONTCP 60
/*
 * The REPLY entry of a closing TCP flow that is not masqueraded outlives the
 * close by the backend's TIME_WAIT (Linux: 60 s, TCP_TIMEWAIT_LEN): as long
 * as the backend may hold the tuple, a new flow that would reuse it gets
 * another source port instead (ct.h, fp_ct_clash).
 */
#define FP_CT_LIFETIME_TCP_TIME_WAIT 60

/*
 * sock_rev_nat: what a socket-LB'd socket was translated from, so recvmsg and
 * getpeername can show the VIP. Keyed by socket cookie and backend.
 */
struct fp_sock_rev_nat_key {
	__u64 cookie;
	union fp_addr addr;
	__u16 port;
	__u16 pad[3];
};

struct fp_sock_rev_nat {
	union fp_addr addr;
	__u16 port;
	__u8 scope; /* of the service entry that was used, FP_SCOPE_* */
	__u8 pad;
	__u32 rev_nat_id;
};

/*
 * config: node-wide settings, one entry (key 0) written by the agent. A map,
 * not load-time constants, so that a changed node address needs no reload
 * and fastpathctl can show what the datapath uses.
 */
struct fp_config {
	union fp_addr masq_addr; /* source of masqueraded flows; not IPv4: none */
	__u16 snat_port_min;     /* masquerade ports, inclusive, host order; */
	__u16 snat_port_max;     /* outside the node's ephemeral port range */
	__u32 flags;             /* FP_CONFIG_F_* */
};

/* Masquerade pod traffic leaving the cluster CIDR (fp_no_masq, egress.h). */
#define FP_CONFIG_F_EGRESS_MASQ (1 << 0)

/*
 * affinity: sessionAffinity ClientIP. Which backend a client last got from a
 * frontend (rev_nat_id), and when. The TC datapath knows a client by its
 * source address; the socket LB by its network namespace (every socket of a
 * pod is one client, as in Cilium), with client left zero. The two kinds of
 * key cannot collide: TC's client is never zero, socket LB's never set.
 */
struct fp_affinity_key {
	union fp_addr client;  /* TC: the client's source address; socket LB: 0 */
	__u64 netns_cookie;    /* socket LB: bpf_get_netns_cookie(); TC: 0 */
	__u32 rev_nat_id;      /* the frontend */
	__u32 pad;
};

struct fp_affinity_val {
	__u32 backend_id;
	__u16 slot;      /* the service slot that named backend_id */
	__u16 pad;
	__u64 last_used; /* bpf_ktime_get_boot_ns() of the last new connection */
};

/*
 * source_ranges: loadBalancerSourceRanges, an LPM trie. The prefix length
 * counts the 32 bits of rev_nat_id too, so one lookup with the full length
 * (32 + 128) finds whether a source lies in any range of that frontend.
 */
struct fp_source_range_key {
	__u32 prefix_len; /* 32 + the range's bits in IPv4-mapped form (96 + n) */
	__u32 rev_nat_id;
	union fp_addr addr;
};

/* metrics: per-CPU counters indexed by FP_METRIC_*. */
struct fp_metric {
	__u64 packets;
	__u64 bytes;
};

enum fp_metric_index {
	FP_METRIC_FORWARD_NEW = 0,   /* new flow DNATed to a backend */
	FP_METRIC_FORWARD_CT,        /* established flow DNATed via ct */
	FP_METRIC_REPLY_REVNAT,      /* reply reverse-NATed */
	FP_METRIC_ICMP_ERR_REVNAT,   /* ICMP error about a flow reverse-NATed */
	FP_METRIC_DROP_NO_BACKEND,   /* service without backends: rejected */
	FP_METRIC_DROP_CT_FULL,      /* ct insert failed */
	FP_METRIC_DROP_MALFORMED,    /* packet too short / bad header */
	FP_METRIC_DROP_BACKEND_GONE, /* slot names a backend that is absent */
	FP_METRIC_SOCK_CONNECT,      /* socket LB translated a connect/sendmsg */
	FP_METRIC_SOCK_NO_BACKEND,   /* socket LB refused: no backend */
	FP_METRIC_DROP_SNAT_NO_PORT, /* masquerade or tuple clash: no free port found */
	FP_METRIC_DROP_NO_ROUTE,     /* masqueraded packet: no route/neighbour/MTU */
	FP_METRIC_DROP_SOURCE_RANGE, /* source outside loadBalancerSourceRanges */
	FP_METRIC_DROP_SPOOFED,      /* a pod sent from an address not its own */
	FP_METRIC_MAX,
};

#endif /* FASTPATH_H */
