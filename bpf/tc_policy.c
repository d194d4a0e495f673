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
 * A packet in a direction that is open, of an endpoint whose other
 * direction is enforced, is recorded in fp_policy_ct and passes, so the
 * replies pass the enforced direction. Everything else (no endpoint,
 * nothing enforced, not IPv4, malformed, later fragments) is not policy's
 * business and goes on (TCX_NEXT), so programs after this one still run.
 *
 * Verdict events go to the fp_verdicts ring: every drop, allows sampled
 * 1 in fp_policy_config.allow_sample.
 *
 * Drop records are limited per CPU to fp_policy_config.drops_per_sec; a
 * record over the limit or not fitting the ring is counted, not written.
 * Not handled yet: IPv6.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "policy.h"

/* Never read: it puts struct fp_verdict (only reached through the ring
 * buffer) into the object's BTF, where the Go twin's layout is checked. */
volatile const struct fp_verdict fp_verdict_layout;

/* FP_DIR_INGRESS or FP_DIR_EGRESS, set by the loader per instance. */
volatile const __u32 fp_policy_dir = FP_DIR_EGRESS;

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
	if (res == FP_PARSE_MALFORMED || (res == FP_PARSE_PASS && p.proto == 0))
		return FP_TCX_NEXT;
	ep = fp_policy_enforced(skb->ifindex);
	if (!ep)
		return FP_TCX_NEXT;

	f.saddr = p.saddr;
	f.daddr = p.daddr;
	f.sport = bpf_ntohs(p.sport);
	f.dport = bpf_ntohs(p.dport);
	f.proto = p.proto;
	if ((ep->flags & flag) && p.proto == IPPROTO_ICMP && res == FP_PARSE_OK && fp_icmp_is_error(p.icmp_type) &&
	    fp_inner_flow(skb, &p, &inner) == 0 && fp_pct_hit(&inner, ep->id, 0))
		return FP_TCX_NEXT;
	return fp_policy_judge(ep, &f, p.tcp_flags, dir) ? FP_TCX_NEXT : TC_ACT_SHOT;
}

char __license[] SEC("license") = "Dual BSD/GPL";
