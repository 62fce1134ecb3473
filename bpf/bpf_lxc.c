/* Endpoint programs, attached as tc clsact filters on the host side of each endpoint's veth (like Cilium's
 * bpf_lxc.c): from_container on host-side ingress (traffic leaving the pod: egress policy), to_container on
 * host-side egress (traffic entering the pod: ingress policy). Compiled once; per-endpoint facts come from maps. */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/notify.h"
#include "lib/policy.h"
#include "lib/conntrack.h"

/* The packet an ICMP error quotes: its IP header and first 8 bytes of L4 */
static __always_inline void parse_related(struct pkt *p, void *inner, void *end)
{
	struct iphdr *ip = inner;
	__u8 *l4;

	if ((void *)(ip + 1) > end || ip->ihl != 5)
		return;
	l4 = (void *)(ip + 1);
	if ((void *)(l4 + 8) > end)
		return;
	p->rel_saddr = ip->saddr;
	p->rel_daddr = ip->daddr;
	p->rel_proto = ip->protocol;
	if (ip->protocol == IPPROTO_TCP || ip->protocol == IPPROTO_UDP) {
		p->rel_sport = ((__u16)l4[0] << 8) | l4[1];
		p->rel_dport = ((__u16)l4[2] << 8) | l4[3];
	} else if (ip->protocol == IPPROTO_ICMP && (l4[0] == ICMP_ECHO || l4[0] == ICMP_ECHOREPLY)) {
		p->rel_sport = p->rel_dport = ((__u16)l4[4] << 8) | l4[5];
	} else {
		return;
	}
	p->related = 1;
}

static __always_inline int parse(struct __sk_buff *skb, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	void *l4;

	if ((void *)(eth + 1) > end)
		return 0;
	if (eth->h_proto == ctl_htons(ETH_P_IPV6)) {
		/* link-local and multicast (ND, RS, MLD) never leave the veth's link: only routable IPv6 counts */
		__u8 *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 40) > end)
			return 0;
		if (ip6[24] == 0xff || (ip6[24] == 0xfe && (ip6[25] & 0xc0) == 0x80))
			return 0;
		return -1;
	}
	if (eth->h_proto != ctl_htons(ETH_P_IP))
		return 0;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->ihl < 5)
		return 0;
	p->saddr = ip->saddr;
	p->daddr = ip->daddr;
	p->proto = ip->protocol;
	p->len = skb->len;
	p->sport = p->dport = p->policy_port = p->ev_sport = p->ev_dport = 0;
	p->tcp_flags = 0;
	__u16 frag = ctl_ntohs(ip->frag_off);
	struct frag_key fk = {};
	fk.saddr = ip->saddr;
	fk.daddr = ip->daddr;
	fk.id = ip->id;
	fk.proto = ip->protocol;
	if (frag & 0x1fff) {
		/* a later fragment carries no L4 header: take the ports its first fragment had */
		struct frag_ports *fp = fragments.lookup(&fk);
		if (fp) {
			p->sport = p->ev_sport = fp->sport;
			p->dport = p->ev_dport = p->policy_port = fp->dport;
		}
		return 1;
	}
	l4 = (void *)ip + ip->ihl * 4;
	if (p->proto == IPPROTO_TCP) {
		struct tcphdr *th = l4;
		if ((void *)(th + 1) > end)
			return 1;
		p->sport = ctl_ntohs(th->source);
		p->dport = ctl_ntohs(th->dest);
		p->tcp_flags = ((__u8 *)th)[13];
	} else if (p->proto == IPPROTO_UDP || p->proto == IPPROTO_SCTP) {
		struct udphdr *uh = l4;   /* SCTP's common header starts with the same two ports */
		if ((void *)(uh + 1) > end)
			return 1;
		p->sport = ctl_ntohs(uh->source);
		p->dport = ctl_ntohs(uh->dest);
	} else if (p->proto == IPPROTO_ICMP) {
		struct icmphdr *ih = l4;
		if ((void *)(ih + 1) > end)
			return 1;
		p->ev_sport = ih->type;
		p->ev_dport = ih->code;
		p->policy_port = ih->type;
		if (ih->type == ICMP_ECHO || ih->type == ICMP_ECHOREPLY) {
			p->sport = p->dport = ctl_ntohs(ih->un.echo.id);
		} else {
			p->sport = ih->type;
			p->dport = ih->code;
			if (ih->type == ICMP_DEST_UNREACH || ih->type == ICMP_TIME_EXCEEDED ||
			    ih->type == ICMP_PARAMETERPROB)
				parse_related(p, (void *)(ih + 1), end);
		}
		return 1;
	}
	p->policy_port = p->dport;
	p->ev_sport = p->sport;
	p->ev_dport = p->dport;
	if (frag & 0x2000) {   /* first of several fragments */
		struct frag_ports fp = { .sport = p->sport, .dport = p->dport };
		fragments.update(&fk, &fp);
	}
	return 1;
}

/* dir: CTL_DIR_EGRESS for packets leaving the endpoint, CTL_DIR_INGRESS for packets entering it */
static __always_inline int handle(struct __sk_buff *skb, __u8 dir)
{
	struct pkt p = {};
	struct ep_info *ep;
	struct dp_state *st;
	struct epcfg_key ck = {};
	struct epcfg_val *cfg;
	struct ct_key key = {};
	struct ct_entry *ct;
	struct ct_entry fresh = {};
	struct verdict v = {};
	__u32 ifindex = skb->ifindex, zero = 0, own_id, peer_id, flags;
	__u64 now;
	__u8 slot = 0, obs, is_reply = 0, enforce;
	__u16 ep_id;

	int l3 = parse(skb, &p);
	if (!l3)
		return TC_ACT_OK;   /* ARP and other non-IP pass */
	if (l3 < 0) {
		/* routable IPv6: the datapath enforces IPv4 only, so an enforced direction drops it */
		ep = endpoints.lookup(&ifindex);
		if (!ep)
			return TC_ACT_OK;
		st = state.lookup(&zero);
		ck.slot = st ? st->active_slot & 1 : 0;
		ck.ep_id = ep->ep_id;
		cfg = epcfg.lookup(&ck);
		flags = cfg ? cfg->flags : ep->flags;
		enforce = dir == CTL_DIR_EGRESS ? !!(flags & EP_F_ENFORCE_EGRESS) : !!(flags & EP_F_ENFORCE_INGRESS);
		if (!enforce || (flags & EP_F_AUDIT))
			return TC_ACT_OK;
		p.len = skb->len;
		count_drop(CTL_DROP_UNKNOWN_L3, dir, p.len);
		emit(skb, &p, CTL_EVENT_DROP, CTL_DROP_UNKNOWN_L3, CTL_VERDICT_DROPPED, dir, ep->ep_id, 0, 0, 0,
		     CTL_MATCH_NONE, 0, 0, p.len, 1);
		return TC_ACT_SHOT;
	}
	obs = dir == CTL_DIR_EGRESS ? CTL_OBS_FROM_ENDPOINT : CTL_OBS_TO_ENDPOINT;
	now = bpf_ktime_get_coarse_ns();   /* lifetimes only: the coarse clock is enough and cheaper */

	if (p.related) {
		/* an ICMP error about a tracked connection (e.g. port unreachable) travels like its replies: the
		 * quoted packet went the other way through this endpoint */
		struct ct_key rk = {};
		rk.saddr = p.rel_saddr;
		rk.daddr = p.rel_daddr;
		rk.sport = p.rel_sport;
		rk.dport = p.rel_dport;
		rk.proto = p.rel_proto;
		rk.dir = dir == CTL_DIR_EGRESS ? CTL_DIR_INGRESS : CTL_DIR_EGRESS;
		rk.ifindex = ifindex;
		if (conntrack.lookup(&rk))
			return TC_ACT_OK;
	}

	/* the fast path: a packet of a tracked connection, one lookup */
	ct_fill_key(&key, &p, dir, ifindex, 0);
	ct = conntrack.lookup(&key);
	if (!ct) {
		ct_fill_key(&key, &p, dir == CTL_DIR_EGRESS ? CTL_DIR_INGRESS : CTL_DIR_EGRESS, ifindex, 1);
		ct = conntrack.lookup(&key);
		is_reply = 1;
	}
	if (ct && (ct_expired(ct, p.proto, now) || (!is_reply && ct_reopened(ct, &p)))) {
		conntrack.delete(&key);
		ct = 0;
	}
	if (ct) {
		__u8 *seen_flags = is_reply ? &ct->rev_flags : &ct->fwd_flags;
		__u8 *seen = is_reply ? &ct->rev_seen : &ct->fwd_seen;
		__u32 *pkts = is_reply ? &ct->rev_pkts : &ct->fwd_pkts;
		__u32 *bytes = is_reply ? &ct->rev_bytes : &ct->fwd_bytes;
		__u8 newflags = p.tcp_flags & ~*seen_flags;

		ct->last_seen = now;
		*pkts += 1;
		*bytes += p.len;
		if (newflags || !*seen) {
			/* identities in packet order: the packet leaves the endpoint iff dir is egress */
			__u32 src = dir == CTL_DIR_EGRESS ? ct->own_identity : ct->peer_identity;
			__u32 dst = dir == CTL_DIR_EGRESS ? ct->peer_identity : ct->own_identity;
			*seen_flags |= p.tcp_flags;
			*seen = 1;
			emit(skb, &p, CTL_EVENT_TRACE, obs, ct->verdict, key.dir, ct->ep_id, src, dst, ct->cookie,
			     ct->match_type, is_reply, *seen_flags, *bytes, *pkts);
			*pkts = 0;
			*bytes = 0;
		}
		return TC_ACT_OK;
	}

	ep = endpoints.lookup(&ifindex);
	if (!ep)
		return TC_ACT_OK;
	ep_id = ep->ep_id;

	/* a new connection: decide policy with the active revision */
	st = state.lookup(&zero);
	if (st)
		slot = st->active_slot & 1;
	ck.slot = slot;
	ck.ep_id = ep_id;
	cfg = epcfg.lookup(&ck);
	own_id = cfg ? cfg->identity : ep->identity;
	flags = cfg ? cfg->flags : ep->flags;
	peer_id = ipcache_identity(slot, dir == CTL_DIR_EGRESS ? p.daddr : p.saddr);
	enforce = dir == CTL_DIR_EGRESS ? !!(flags & EP_F_ENFORCE_EGRESS) : !!(flags & EP_F_ENFORCE_INGRESS);

	__u32 src_id = dir == CTL_DIR_EGRESS ? own_id : peer_id;
	__u32 dst_id = dir == CTL_DIR_EGRESS ? peer_id : own_id;
	fresh.verdict = CTL_VERDICT_FORWARDED;
	if (enforce) {
		policy_lookup(&v, slot, dir, ep_id, peer_id, p.proto, p.policy_port);
		if (!v.allowed) {
			if (!(flags & EP_F_AUDIT)) {
				__u8 reason = v.deny_rule ? CTL_DROP_POLICY_DENY : CTL_DROP_POLICY;
				count_drop(reason, dir, p.len);
				emit(skb, &p, CTL_EVENT_POLICY_VERDICT, reason, CTL_VERDICT_DROPPED, dir, ep_id, src_id,
				     dst_id, v.cookie, v.match_type, 0, p.tcp_flags, p.len, 1);
				emit(skb, &p, CTL_EVENT_DROP, reason, CTL_VERDICT_DROPPED, dir, ep_id, src_id, dst_id,
				     v.cookie, v.match_type, 0, p.tcp_flags, p.len, 1);
				return TC_ACT_SHOT;
			}
			fresh.verdict = CTL_VERDICT_AUDIT;
		}
		emit(skb, &p, CTL_EVENT_POLICY_VERDICT, 0, fresh.verdict, dir, ep_id, src_id, dst_id, v.cookie,
		     v.match_type, 0, p.tcp_flags, p.len, 1);
	}

	fresh.last_seen = now;
	fresh.cookie = v.cookie;
	fresh.match_type = v.match_type;
	fresh.peer_identity = peer_id;
	fresh.own_identity = own_id;
	fresh.ep_id = ep_id;
	fresh.fwd_flags = p.tcp_flags;
	fresh.fwd_seen = 1;
	ct_fill_key(&key, &p, dir, ifindex, 0);
	conntrack.update(&key, &fresh);
	emit(skb, &p, CTL_EVENT_TRACE, obs, fresh.verdict, dir, ep_id, src_id, dst_id, v.cookie, v.match_type, 0,
	     p.tcp_flags, p.len, 1);
	return TC_ACT_OK;
}

int from_container(struct __sk_buff *skb)
{
	return handle(skb, CTL_DIR_EGRESS);
}

int to_container(struct __sk_buff *skb)
{
	return handle(skb, CTL_DIR_INGRESS);
}
