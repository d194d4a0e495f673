// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * NetworkPolicy at a pod's host veth (docs/policy-datapath.md), for IPv4.
 *
 * One object, loaded once per direction with the load-time constant
 * fp_policy_dir: EGRESS instances run at the host veth's TC ingress
 * (packets the pod sends; after tc_lb, so the destination is the backend a
 * Service picked), INGRESS instances at its TC egress (packets to the pod).
 *
 * For each packet of an endpoint whose direction is enforced:
 *   1. a packet of a flow the endpoint already let through, either
 *      direction (fp_policy_ct), passes: replies need no rule;
 *   2. an ICMP error about such a flow passes (related);
 *   3. otherwise the peer's identity (fp_ipcache, longest prefix; world
 *      when only /0 matches or nothing does) and the destination port are
 *      looked up in fp_policy, exact identity first, then any identity. A
 *      hit records the flow and passes; a miss drops, with a verdict event.
 * A packet in a direction that is open is recorded in fp_policy_ct and
 * passes: the replies pass the other direction if it is enforced, and a
 * flow that began before a policy selected the pod stays established when
 * one does (docs/policy-datapath.md: policy judges new flows only).
 * Everything else (no endpoint, not IPv4, malformed, later fragments) is
 * not policy's business and goes on (TCX_NEXT), so programs after this
 * one still run.
 *
 * Verdict events go to the fp_verdicts ring: every drop, allows sampled
 * 1 in fp_policy_config.allow_sample. New flows into a pod whose ingress
 * no policy selects are sampled the same way (FP_REASON_FORWARDED): every
 * endpoint's flows are tracked, so every new flow is known as one.
 *
 * Drop records are limited per CPU to fp_policy_config.drops_per_sec; a
 * record over the limit or not fitting the ring is counted, not written.
 *
 * L7 policy (docs/l7.md): an fp_policy entry with FP_POLICY_F_L7 sends its
 * TCP flows to the node's L7 proxy with bpf_sk_assign, which works at TC
 * ingress only. So the EGRESS instance (a TC ingress) takes both the pod's
 * own egress flows and, for every TCP packet entering there, flows whose
 * destination pod's ingress entry wants the proxy (fp_dest_l7); attached to
 * an uplink (no endpoint), it does the latter for remote clients. The
 * INGRESS instance cannot redirect: it turns such flows (from the node
 * itself, or masqueraded by tc_lb) around into the EGRESS instance
 * (fp_proxy_host), and passes the proxy's upstream leg
 * (FP_PROXY_MARK_UPSTREAM).
 * Not handled yet: IPv6.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "policy.h"
#include "ctmap.h"
#include "nat.h"

/* Never read: it puts struct fp_verdict (only reached through the ring
 * buffer) into the object's BTF, where the Go twin's layout is checked. */
volatile const struct fp_verdict fp_verdict_layout;

/* FP_DIR_INGRESS or FP_DIR_EGRESS, set by the loader per instance. */
volatile const __u32 fp_policy_dir = FP_DIR_EGRESS;

/* Set by the loader when the node runs the L7 proxy: only then does the
 * EGRESS instance look at the destination pod's ingress (fp_dest_l7, a FIB
 * lookup per TCP packet). */
volatile const __u32 fp_l7_dest = 0;

static __always_inline int fp_icmp_is_error(__u8 type)
{
	return type == FP_ICMP_DEST_UNREACH || type == FP_ICMP_TIME_EXCEEDED || type == FP_ICMP_PARAMETERPROB;
}

/* fp_inner_flow reads the flow an ICMP error quotes. */
static __always_inline int fp_inner_flow(struct __sk_buff *skb, const struct fp_pkt *p, struct fp_pflow *f)
{
	__u32 off = p->l4_off + sizeof(struct fp_icmphdr);
	struct iphdr *ip = fp_hdr(skb, off, sizeof(*ip));
	__be16 *ports;

	if (!ip || ip->version != 4 || ip->ihl < 5)
		return -1;
	f->saddr = ip->saddr;
	f->daddr = ip->daddr;
	f->proto = ip->protocol;
	off += ip->ihl * 4;
	if (f->proto != IPPROTO_TCP && f->proto != IPPROTO_UDP && f->proto != IPPROTO_SCTP)
		return 0;
	ports = fp_hdr(skb, off, 4);
	if (!ports)
		return -1;
	f->sport = bpf_ntohs(ports[0]);
	f->dport = bpf_ntohs(ports[1]);
	return 0;
}

/*
 * fp_proxy_assign hands a packet of a flow the L7 proxy takes to the
 * proxy's socket in this (the node's) namespace: the connection the proxy
 * accepted for the flow, else (a SYN) its listener on proxy_port. The
 * socket keeps the packet's destination as its local address (the listener
 * is IP_TRANSPARENT), so the proxy sees the original destination. The mark
 * selects the node's policy route "fwmark -> local", without which the
 * stack would forward the packet to its destination instead. No listener:
 * dropped (fail closed), the client's SYN retransmission tries again.
 */
/*
 * fp_proxy_frontend gives a redirected flow that tc_lb translated (a
 * client's connection to a Service frontend, already sent to a backend
 * when tc_policy sees it) its frontend back as destination, so the proxy's
 * socket is the frontend's, as the client expects its answers; the proxy
 * reads the backend tc_lb chose from the flow's fp_ct entry. A flow whose
 * source tc_lb changed too (a tuple clash gave it a port of its own, or a
 * masquerade) gets the client's own source back (the REPLY entry's
 * snat_addr/port): the proxy's socket is then the one the client opened,
 * client -> frontend, and its answers reach the client's socket; the proxy
 * dials the backend from the node's address, so it needs no port of its
 * own there. Masqueraded flows get here turned around by fp_proxy_host
 * (their client's egress L7 entries were judged by tc_lb, which cannot
 * redirect: l7-no-proxy). Returns 1 when it gave the frontend back, 0 for
 * a flow tc_lb did not translate, -1 when a rewrite failed.
 */
static __always_inline int fp_proxy_frontend(struct __sk_buff *skb, const struct fp_pkt *p, struct fp_pflow *f)
{
	struct fp_ct_key k = {.sport = f->dport, .dport = f->sport, .proto = f->proto, .dir = FP_CT_REPLY};
	struct fp_ct_entry *e;
	__be32 vip;
	__be16 vport;

	fp_addr_set_v4(&k.saddr, f->daddr);
	fp_addr_set_v4(&k.daddr, f->saddr);
	e = bpf_map_lookup_elem(&fp_ct, &k);
	if (!e || !e->rev_nat_id)
		return 0;
	if (e->flags & FP_CT_F_SNAT) {
		if (!fp_addr_is_v4(&e->snat_addr) ||
		    fp_nat(skb, p, FP_SRC, e->snat_addr.w[3], bpf_htons(e->snat_port)) < 0)
			return -1;
		f->saddr = e->snat_addr.w[3];
		f->sport = e->snat_port;
	}
	vip = e->nat_addr.w[3];
	vport = bpf_htons(e->nat_port);
	if (fp_nat(skb, p, FP_DST, vip, vport) < 0)
		return -1;
	f->daddr = vip;
	f->dport = e->nat_port;
	return 1;
}

static __always_inline int fp_proxy_assign(struct __sk_buff *skb, const struct fp_pkt *p, struct fp_pflow *f,
					   __u16 proxy_port)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	long err;

	int xlated = fp_proxy_frontend(skb, p, f);
	struct fp_endpoint *ep;

	if (xlated < 0)
		return TC_ACT_SHOT;
	/* The proxy answers as the frontend: the pod's policy CT must know
	 * that tuple too, or its enforced ingress judges the answers as a
	 * new flow from the frontend. */
	if (xlated > 0) {
		ep = fp_policy_endpoint(skb->ifindex);
		if (ep && !fp_pct_hit(f, ep->id, p->tcp_flags))
			fp_pct_create(f, ep->id, 0, 0);
	}

	t.ipv4.saddr = f->saddr;
	t.ipv4.daddr = f->daddr;
	t.ipv4.sport = bpf_htons(f->sport);
	t.ipv4.dport = bpf_htons(f->dport);
	sk = bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (sk && sk->state == BPF_TCP_LISTEN) {
		/* A listener of the node on the destination's port: not ours. */
		bpf_sk_release(sk);
		sk = NULL;
	}
	if (!sk) {
		t.ipv4.dport = bpf_htons(proxy_port);
		sk = bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
		if (!sk)
			return TC_ACT_SHOT;
		if (sk->state != BPF_TCP_LISTEN) {
			bpf_sk_release(sk);
			return TC_ACT_SHOT;
		}
	}
	err = bpf_sk_assign(skb, sk, 0);
	bpf_sk_release(sk);
	if (err)
		return TC_ACT_SHOT;
	skb->mark = FP_PROXY_MARK_REDIRECT;
	return TC_ACT_OK;
}

/*
 * fp_proxy_host takes a flow from the node itself (a host-network client)
 * to a pod whose ingress wants the proxy. The INGRESS instance, at the
 * pod's host veth TC egress, cannot bpf_sk_assign: it turns the packet
 * around into the same veth's TC ingress, marked with the proxy port,
 * where the EGRESS instance assigns it (the mark says the flow was judged,
 * as the host's identity). The proxy answers from the pod's address to the
 * node's own, delivered locally. The same path takes the other flows that
 * meet a pod's L7 ingress only here: masqueraded Service flows, which tc_lb
 * sends straight to the pod's veth (hairpin: the pod called a Service that
 * picked the pod itself; external to a local backend without
 * externalTrafficPolicy: Local); fp_proxy_frontend gives them their
 * client's source and frontend back, so the proxy answers as the frontend.
 */
static __always_inline int fp_proxy_host(struct __sk_buff *skb, __u16 proxy_port)
{
	skb->mark = FP_PROXY_MARK_HOST | proxy_port;
	return bpf_redirect(skb->ifindex, BPF_F_INGRESS);
}

/*
 * fp_dest_l7 judges, where a packet enters the node (a local client's
 * host veth, or an uplink for a remote client), the ingress policy of the
 * local pod it goes to, but only to find flows its L7 rules want in the
 * proxy: those must be taken here, at a TC ingress (bpf_sk_assign works
 * nowhere else). Everything else is left to tc_policy at the pod's veth,
 * which judges as before. Returns the proxy port, or 0.
 */
static __always_inline __u16 fp_dest_l7(struct __sk_buff *skb, const struct fp_pkt *p, const struct fp_pflow *f)
{
	struct bpf_fib_lookup fib = {};
	struct fp_policy_val *rule;
	struct fp_endpoint *ep;
	__u32 found, ifindex, peer_id;

	fib.family = 2; /* AF_INET */
	fib.l4_protocol = f->proto;
	fib.sport = p->sport;
	fib.dport = p->dport;
	fib.ipv4_src = f->saddr;
	fib.ipv4_dst = f->daddr;
	fib.ifindex = skb->ifindex;
	found = bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_DIRECT | BPF_FIB_LOOKUP_SKIP_NEIGH);
	if (found != BPF_FIB_LKUP_RET_SUCCESS && found != BPF_FIB_LKUP_RET_NO_NEIGH)
		return 0;
	ifindex = fib.ifindex;
	ep = bpf_map_lookup_elem(&fp_endpoints, &ifindex);
	if (!ep || !(ep->flags & FP_EP_F_ENFORCE_INGRESS))
		return 0;
	found = fp_pct_find(f, ep->id, p->tcp_flags);
	if (found)
		return found > 1 ? found - 2 : 0;
	peer_id = fp_ipcache_identity(f->saddr);
	rule = fp_policy_lookup(peer_id, ep->id, FP_DIR_INGRESS, f->proto, f->dport);
	if (!rule || !(rule->flags & FP_POLICY_F_L7) || !rule->proxy_port)
		return 0;
	if (fp_pct_create(f, ep->id, rule->cookie, rule->proxy_port) < 0)
		return 0; /* the pod's veth judges it again and drops it */
	fp_verdict_emit(f, peer_id, ep->identity, ep->id, FP_DIR_INGRESS, FP_VERDICT_ALLOW, FP_REASON_PROXY_REDIRECT,
			rule->cookie);
	return rule->proxy_port;
}

SEC("tc")
int fp_tc_policy(struct __sk_buff *skb)
{
	struct fp_pkt p = {};
	struct fp_pflow f = {}, inner = {};
	struct fp_endpoint *ep;
	__u8 dir = fp_policy_dir == FP_DIR_INGRESS ? FP_DIR_INGRESS : FP_DIR_EGRESS;
	__u16 flag = dir == FP_DIR_INGRESS ? FP_EP_F_ENFORCE_INGRESS : FP_EP_F_ENFORCE_EGRESS;
	int res = fp_parse(skb, &p);

	/* PASS with a protocol set is IPv4 of a protocol without ports: policy
	 * still applies (only every-protocol rules allow it). */
	__u16 proxy_port = 0;

	if (res == FP_PARSE_MALFORMED || (res == FP_PARSE_PASS && p.proto == 0))
		return FP_TCX_NEXT;
	f.saddr = p.saddr;
	f.daddr = p.daddr;
	f.sport = bpf_ntohs(p.sport);
	f.dport = bpf_ntohs(p.dport);
	f.proto = p.proto;
	if (dir == FP_DIR_EGRESS && (skb->mark & FP_PROXY_MARK_MASK) == FP_PROXY_MARK_HOST && f.proto == IPPROTO_TCP) {
		/* Turned around by fp_proxy_host: addressed to the pod's MAC, so
		 * the stack would take it for another host's and drop it. */
		bpf_skb_change_type(skb, 0 /* PACKET_HOST */);
		return fp_proxy_assign(skb, &p, &f, skb->mark & 0xffff);
	}
	ep = fp_policy_endpoint(skb->ifindex);
	if (!ep)
		goto dest;
	if (dir == FP_DIR_INGRESS && skb->mark == FP_PROXY_MARK_UPSTREAM) {
		/* The proxy's upstream leg: the proxy judged this pod's ingress
		 * for the request (docs/l7.md). Recorded, so replies pass. */
		if (!fp_pct_hit(&f, ep->id, p.tcp_flags))
			fp_pct_create(&f, ep->id, 0, 0);
		return FP_TCX_NEXT;
	}
	if ((ep->flags & flag) && p.proto == IPPROTO_ICMP && res == FP_PARSE_OK && fp_icmp_is_error(p.icmp_type) &&
	    fp_inner_flow(skb, &p, &inner) == 0 && fp_pct_hit(&inner, ep->id, 0))
		return FP_TCX_NEXT;
	if (!fp_policy_judge_l7(ep, &f, p.tcp_flags, dir, &proxy_port))
		return TC_ACT_SHOT;
	if (proxy_port && dir == FP_DIR_INGRESS)
		return fp_proxy_host(skb, proxy_port);
	if (proxy_port)
		return fp_proxy_assign(skb, &p, &f, proxy_port);
dest:
	/* At a TC ingress (the EGRESS instance): the destination pod's
	 * ingress may want the proxy. */
	if (fp_l7_dest && dir == FP_DIR_EGRESS && f.proto == IPPROTO_TCP && res == FP_PARSE_OK) {
		proxy_port = fp_dest_l7(skb, &p, &f);
		if (proxy_port)
			return fp_proxy_assign(skb, &p, &f, proxy_port);
	}
	return FP_TCX_NEXT;
}

char __license[] SEC("license") = "Dual BSD/GPL";
