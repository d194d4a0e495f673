// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * VXLAN tunnel mode: TC egress of the node's fp_vxlan device, a kernel vxlan
 * device in external (collect-metadata) mode, as Cilium's tunnel mode. The
 * device has no remote of its own: every packet routed into it needs a
 * tunnel key, and this program sets it from fp_tunnel_map (the pod CIDR of
 * the inner destination -> the node that has it). The kernel then
 * encapsulates towards that node's underlay address.
 *
 * A packet whose destination is in no node's pod CIDR (the route into the
 * device exists only for pod CIDRs of other nodes, so this means the map
 * and the routes disagree for a moment, during a node's removal) is
 * dropped: without a key the device would drop it anyway.
 *
 * Receiving needs no program: the device decapsulates, and the inner frame's
 * destination MAC is the receiving device's own, because every node gives
 * fp_vxlan the same MAC address and the device is NOARP (the neighbour of a
 * route through a NOARP device is the device's own address). The inner
 * source MAC is rewritten here to fp_tunnel_peer_mac: vxlan drops a frame
 * whose source is its own address as a loop. Replies of
 * load-balanced flows that come back through the tunnel are reverse-NATed
 * by tc_lb, attached at fp_vxlan's ingress like at any internal interface.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <stddef.h>
#include "addr.h"
#include "tunnel.h"

#define FP_TUNNEL_TTL 64

/* Every fp_vxlan has MAC 02:fa:57:00:00:01 (internal/routing); frames leave
 * with this one as their source. */
static const __u8 fp_tunnel_peer_mac[ETH_ALEN] = {0x02, 0xfa, 0x57, 0x00, 0x00, 0x02};

SEC("tc")
int fp_tc_tunnel(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct bpf_tunnel_key tk = {};
	struct fp_tunnel_endpoint *ep;
	struct fp_cidr_key key = {};
	struct iphdr *ip;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_SHOT;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return TC_ACT_SHOT;
	key.prefixlen = 128;
	fp_addr_set_v4(&key.addr, ip->daddr);
	ep = bpf_map_lookup_elem(&fp_tunnel_map, &key);
	if (!ep || !fp_addr_is_v4(&ep->node))
		return TC_ACT_SHOT;
	tk.remote_ipv4 = bpf_ntohl(ep->node.w[3]);
	tk.tunnel_id = FP_TUNNEL_VNI;
	tk.tunnel_ttl = FP_TUNNEL_TTL;
	if (bpf_skb_set_tunnel_key(skb, &tk, sizeof(tk), BPF_F_ZERO_CSUM_TX) < 0 ||
	    bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_source), fp_tunnel_peer_mac, ETH_ALEN, 0) < 0)
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

char __license[] SEC("license") = "Dual BSD/GPL";
