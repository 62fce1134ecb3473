/* NodePort for traffic from outside the node, like Cilium's bpf_host.c on its native devices (nodeport.h):
 * nodeport_from_netdev (in bpf_host.c's from_netdev: tc ingress of a device named by install --devices) translates
 * a packet to a NodePort frontend (the node's address + port) to a backend before the node routes it;
 * nodeport_to_netdev (in to_netdev: tc egress of that device) gives the replies the frontend back. The connection
 * lives in conntrack keyed on the device (dir ingress, as the client sent it, destination the backend), its
 * frontend in nat_addr/nat_port. Policy is the backend's ingress policy in to_container, with the client's identity
 * (world, or its CIDR identity). */
#ifndef CTL_NODEPORT_H
#define CTL_NODEPORT_H

#include "lb.h"
#include "notify.h"
#include "parse.h"

static __always_inline int nodeport_from_netdev(struct __sk_buff *skb)
{
	struct pkt p = {};
	struct ct_key key = {};
	struct ct_entry *ct;
	__u32 ifindex = skb->ifindex, nat_addr = 0, svc_id = 0, zero = 0;
	__u16 nat_port = 0;
	__u64 now;
	struct dp_state *st;
	__u8 hairpin = 0;

	if (parse(skb, &p) <= 0 || p.related)
		return TC_ACT_OK;
	now = bpf_ktime_get_coarse_ns();
	int lb = lb_translate(skb, &p, ifindex, now, &nat_addr, &nat_port, &svc_id, 1, &hairpin);
	if (lb == LB_NONE)
		return TC_ACT_OK;
	if (lb == LB_NO_BACKEND) {
		st = state.lookup(&zero);
		count_drop(CTL_DROP_NO_SERVICE, CTL_DIR_INGRESS, p.len);
		emit(skb, &p, CTL_EVENT_DROP, CTL_DROP_NO_SERVICE, CTL_VERDICT_DROPPED, CTL_DIR_INGRESS, 0,
		     ipcache_identity(st ? st->active_slot & 1 : 0, p.saddr), CTL_IDENTITY_WORLD, 0, CTL_MATCH_NONE, 0, p.tcp_flags, p.len, 1);
		if (lb_reject(skb) == TC_ACT_REDIRECT)
			return TC_ACT_REDIRECT;
		return TC_ACT_SHOT;
	}
	if (lb == LB_ERROR)
		return TC_ACT_SHOT;
	ct_fill_key(&key, &p, CTL_DIR_INGRESS, ifindex, 0);
	ct = conntrack.lookup(&key);
	if (ct && !ct_expired(ct, p.proto, now) && !ct_reopened(ct, &p)) {
		ct->last_seen = now;
		ct->fwd_flags |= p.tcp_flags;
		return TC_ACT_OK;
	}
	struct ct_entry fresh = {};
	fresh.last_seen = now;
	fresh.verdict = CTL_VERDICT_FORWARDED;
	fresh.fwd_flags = p.tcp_flags;
	fresh.nat_addr = nat_addr;
	fresh.nat_port = nat_port;
	conntrack.update(&key, &fresh);
	return TC_ACT_OK;
}

static __always_inline int nodeport_to_netdev(struct __sk_buff *skb)
{
	struct pkt p = {};
	struct ct_key key = {};
	struct ct_entry *ct;

	if (skb->mark == LB_REJECT_MARK) {
		skb->mark = 0;      /* our own answer for a NodePort without backends */
		return TC_ACT_OK;
	}
	if (parse(skb, &p) <= 0 || p.related)
		return TC_ACT_OK;
	ct_fill_key(&key, &p, CTL_DIR_INGRESS, skb->ifindex, 1);
	ct = conntrack.lookup(&key);
	if (!ct || !ct->nat_addr)
		return TC_ACT_OK;
	ct->last_seen = bpf_ktime_get_coarse_ns();
	ct->rev_flags |= p.tcp_flags;
	if (lb_rev_nat(skb, &p, ct) < 0)
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

#endif
