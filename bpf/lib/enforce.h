/* Enforcing one endpoint's policy on a packet: services first (endpoints only), conntrack, the policy decision
 * with the active revision (deny wins), drops and events. One body for every endpoint, the pods' (bpf_lxc.c, on
 * the host side of their veths) and the host's (bpf_host.c, on the node's devices), as Cilium's bpf_lxc.c and
 * bpf_host.c share lib/policy.h and lib/conntrack.h. */
#ifndef CTL_ENFORCE_H
#define CTL_ENFORCE_H

#include "maps.h"
#include "notify.h"
#include "policy.h"
#include "conntrack.h"
#include "lb.h"
#include "parse.h"
#include "proxy.h"

/* The host endpoint (bpf_host.c): the node's own stack, Cilium's reserved:host (identity 1,
 * pkg/identity/numericidentity.go ReservedIdentityHost). Its policy lives under endpoint id 0 (policy/resolve.py
 * HOST_ENDPOINT_ID); the node's devices carry it in `endpoints` while the host firewall is on. */
#define CTL_HOST_EP_ID 0
#define CTL_IDENTITY_HOST 1
/* bpf/lib/trace.h enum trace_point: TRACE_FROM_NETWORK 10, TRACE_TO_NETWORK 11 (bpf_host.c on a native device) */
#define CTL_OBS_FROM_NETWORK 10
#define CTL_OBS_TO_NETWORK 11

/* The policy decision for one packet of the endpoint on `ifindex`, with the active revision. */
struct decision {
	struct verdict v;
	__u32 own_id;
	__u32 peer_id;
	__u32 revision;     /* low 32 bits of the revision the decision was made with */
	__u16 ep_id;
	__u8 slot;
	__u8 enforce;
	__u8 audit;
};

/* Monitor aggregation hides every receive point alike (bpf/lib/trace.h: TRACE_FROM_NETWORK as TRACE_FROM_LXC) */
static __always_inline __u8 rx_obs(__u8 obs)
{
	return obs == CTL_OBS_FROM_NETWORK ? CTL_OBS_FROM_ENDPOINT : obs;
}

/* A pod's packet to or from the node's own stack never crosses a device: the host's policy applies to it here
 * too, in the other direction (the pod's egress is the host's ingress), as Cilium's bpf_lxc.c hands packets to
 * the host to the host endpoint's policy program (HOST_EP_ID in POLICY_CALL_MAP). Only while the host firewall
 * is on (the host endpoint has a config in this revision) and the pod's own policy lets the packet pass. */
static __always_inline void decide_host_too(struct decision *d, const struct pkt *p, __u8 dir)
{
	struct epcfg_key ck = {};
	struct epcfg_val *cfg;
	struct verdict hv;
	__u8 hdir = dir == CTL_DIR_EGRESS ? CTL_DIR_INGRESS : CTL_DIR_EGRESS;

	if (d->enforce && !d->v.allowed)
		return;
	ck.slot = d->slot;
	ck.ep_id = CTL_HOST_EP_ID;
	cfg = epcfg.lookup(&ck);
	if (!cfg || !(cfg->flags & (hdir == CTL_DIR_INGRESS ? EP_F_ENFORCE_INGRESS : EP_F_ENFORCE_EGRESS)))
		return;
	policy_lookup(&hv, d->slot, hdir, CTL_HOST_EP_ID, d->own_id, p->proto, p->policy_port);
	if (hv.allowed)
		return;
	d->v = hv;
	d->enforce = 1;
	d->audit = !!(cfg->flags & EP_F_AUDIT);
}

/* 0 when the interface is no endpoint's (the packet passes untouched) */
static __always_inline int decide(struct decision *d, const struct pkt *p, __u32 ifindex, __u8 dir)
{
	struct epcfg_key ck = {};
	struct epcfg_val *cfg;
	struct ep_info *ep;
	struct dp_state *st;
	__u32 zero = 0, flags;

	ep = endpoints.lookup(&ifindex);
	if (!ep)
		return 0;
	st = state.lookup(&zero);
	d->slot = st ? st->active_slot & 1 : 0;
	d->revision = st ? (__u32)st->revision : 0;
	d->ep_id = ep->ep_id;
	ck.slot = d->slot;
	ck.ep_id = d->ep_id;
	cfg = epcfg.lookup(&ck);
	d->own_id = cfg ? cfg->identity : ep->identity;
	flags = cfg ? cfg->flags : ep->flags;
	d->peer_id = ipcache_identity(d->slot, dir == CTL_DIR_EGRESS ? p->daddr : p->saddr);
	d->enforce = dir == CTL_DIR_EGRESS ? !!(flags & EP_F_ENFORCE_EGRESS) : !!(flags & EP_F_ENFORCE_INGRESS);
	d->audit = !!(flags & EP_F_AUDIT);
	d->v.allowed = 1;
	d->v.deny_rule = 0;
	d->v.match_type = CTL_MATCH_NONE;
	d->v.cookie = 0;
	d->v.proxy_port = 0;
	if (d->enforce)
		policy_lookup(&d->v, d->slot, dir, d->ep_id, d->peer_id, p->proto, p->policy_port);
	if (d->peer_id == CTL_IDENTITY_HOST && d->ep_id != CTL_HOST_EP_ID)
		decide_host_too(d, p, dir);
	return 1;
}

/* Drop a packet the policy denies: counted, a policy-verdict and a drop event (Cilium emits both). */
static __always_inline int drop_denied(struct __sk_buff *skb, const struct pkt *p, const struct decision *d,
				       __u8 dir)
{
	__u8 reason = d->v.deny_rule ? CTL_DROP_POLICY_DENY : CTL_DROP_POLICY;
	__u32 src_id = dir == CTL_DIR_EGRESS ? d->own_id : d->peer_id;
	__u32 dst_id = dir == CTL_DIR_EGRESS ? d->peer_id : d->own_id;

	count_drop(reason, dir, p->len);
	emit(skb, p, CTL_EVENT_POLICY_VERDICT, reason, CTL_VERDICT_DROPPED, dir, d->ep_id, src_id, dst_id,
	     d->v.cookie, d->v.match_type, 0, p->tcp_flags, p->len, 1);
	emit(skb, p, CTL_EVENT_DROP, reason, CTL_VERDICT_DROPPED, dir, d->ep_id, src_id, dst_id, d->v.cookie,
	     d->v.match_type, 0, p->tcp_flags, p->len, 1);
	return TC_ACT_SHOT;
}

/* The proxy a new connection goes to: its allowing entry's port (L7 rules), for TCP and UDP of pods only */
static __always_inline __u16 proxy_port_of(const struct decision *d, const struct pkt *p)
{
	if (!d->enforce || !d->v.allowed || d->ep_id == CTL_HOST_EP_ID)
		return 0;
	return p->proto == IPPROTO_TCP || p->proto == IPPROTO_UDP ? d->v.proxy_port : 0;
}

/* A packet that the proxy sends to an endpoint from its own upstream socket: locally made (it has a socket, which
 * forwarded packets do not) with a pod's address as source, which only a transparent socket can have. Its
 * connection is not redirected again and its replies go back to that socket. At tc egress (to_container). */
static __always_inline int from_proxy_upstream(struct __sk_buff *skb, const struct decision *d)
{
	struct bpf_sock *sk = skb->sk;

	if (!sk)
		return 0;
	return d->peer_id != CTL_IDENTITY_WORLD && d->peer_id != CTL_IDENTITY_HOST;
}

/* At an endpoint's tc egress (to_container) the proxy's upstream connection and a client's connection redirected to
 * the proxy can carry one tuple: HAProxy connects from the client's address (usesrc clientip) with a port the
 * node's connect() picks, and nothing keeps that from being the port of a client's connection to the proxy (the
 * node's socket of that one is b:80 <- a:P, not a:P -> b:80), and often is (bench_l7 at 8 connections: every
 * upstream SYN sampled stalled had a client connection's port). Whose entry a forward packet met: the proxy's
 * packets are the node's own (they carry a socket), a client's are forwarded (they do not). Returns 1 when the
 * entry is the other side's: the proxy's own for a client's packet (that connection is decided as new and goes to
 * the proxy; the entry stays), or, for the proxy's packet, a redirected client's entry that an older datapath
 * stored here (replaced). */
static __always_inline int ct_other_side(const struct __sk_buff *skb, const struct ct_entry *ct)
{
	return ct->proxy_upstream ? !skb->sk : ct->proxy_port && skb->sk;
}

/* A connection that the destination's ingress policy sends to the proxy (decided at tc egress, to_container):
 * when its source is a pod of this node, its later packets go to the proxy from the source's tc ingress, where the
 * connection is first seen. They must: at the first routing decision the node's early demux finds the proxy's
 * socket of this tuple and attaches it, and a forwarded packet that carries a socket is dropped (ip_forward). */
static __always_inline void proxy_from_source_too(const struct __sk_buff *skb, const struct pkt *p, __u16 port)
{
	struct ct_key k = {};
	struct ct_entry *src;

	ct_fill_key(&k, p, CTL_DIR_EGRESS, skb->ingress_ifindex, 0);
	src = conntrack.lookup(&k);
	if (src)
		src->proxy_port = port;
}

/* Hand a packet to the proxy (lib/proxy.h); fail closed: without a proxy socket it is dropped, a TCP SYN that
 * its pod sent is refused at once (ICMP port unreachable, as for a service without backends). dir: the policy
 * direction; bounced: a packet of the ingress direction bounced to tc ingress (lib/proxy.h). */
static __always_inline int to_proxy(struct __sk_buff *skb, const struct pkt *p, __u16 port, __u8 dir, __u16 ep_id,
				    __u8 bounced, __u32 src_id, __u32 dst_id)
{
	int ret = proxy_redirect(skb, p, port, dir == CTL_DIR_EGRESS || bounced);

	if (ret != CTL_PROXY_NO_SOCK)
		return ret;
	count_drop(CTL_DROP_SOCKET_LOOKUP, dir, p->len);
	emit(skb, p, CTL_EVENT_DROP, CTL_DROP_SOCKET_LOOKUP, CTL_VERDICT_DROPPED, dir, ep_id, src_id, dst_id, 0,
	     CTL_MATCH_NONE, 0, p->tcp_flags, p->len, 1);
	if (dir == CTL_DIR_EGRESS && !bounced && p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN &&
	    lb_reject(skb) == TC_ACT_REDIRECT)
		return TC_ACT_REDIRECT;
	return TC_ACT_SHOT;
}

/* A forward packet of a tracked connection whose verdict predates the active revision, or was a denial:
 * decide again (Cilium's bpf_lxc.c checks policy for every packet but replies and related ones), so revoking a
 * policy cuts the connections it allowed, and allowing again revives them. The entry stays, marked, so that
 * replies keep their meaning and a denied peer cannot turn into a "reply". */
static __always_inline int revalidate(struct __sk_buff *skb, const struct pkt *p, struct ct_entry *ct,
				      __u32 ifindex, __u8 dir)
{
	struct decision d = {};

	if (!decide(&d, p, ifindex, dir))
		return TC_ACT_OK;
	ct->policy_rev = d.revision;
	ct->own_identity = d.own_id;
	ct->peer_identity = d.peer_id;
	ct->cookie = d.v.cookie;
	ct->match_type = d.v.match_type;
	if (d.enforce && !d.v.allowed && !d.audit) {
		ct->verdict = CTL_VERDICT_DROPPED;
		return drop_denied(skb, p, &d, dir);
	}
	ct->verdict = d.enforce && !d.v.allowed ? CTL_VERDICT_AUDIT : CTL_VERDICT_FORWARDED;
	return TC_ACT_OK;
}

/* dir: CTL_DIR_EGRESS for packets leaving the endpoint, CTL_DIR_INGRESS for packets entering it; obs: the
 * observation point of its traces; host: the host endpoint on a device (only packets to or from the node's own
 * addresses are its; no service translation) */
static __always_inline int handle(struct __sk_buff *skb, __u8 dir, __u8 obs, __u8 host)
{
	struct pkt p = {};
	struct ct_key key = {};
	struct ct_entry *ct;
	struct ct_entry fresh = {};
	struct decision d = {};
	struct dp_state *st;
	__u32 ifindex = skb->ifindex, zero = 0, nat_addr = 0, svc_id = 0;
	__u64 now;
	__u16 nat_port = 0;
	__u8 is_reply = 0, hairpin = 0, keep = 0;

	if (!host && dir == CTL_DIR_INGRESS && skb->mark == LB_REJECT_MARK) {
		skb->mark = 0;      /* our own answer for a service without backends, or a hairpin packet (lib/lb.h) */
		return TC_ACT_OK;
	}
	int l3 = parse(skb, &p);
	if (!l3)
		return TC_ACT_OK;   /* ARP and other non-IP pass */
	if (l3 < 0) {
		/* routable IPv6: the datapath enforces IPv4 only, so an enforced direction drops it */
		if (!decide(&d, &p, ifindex, dir) || !d.enforce || d.audit)
			return TC_ACT_OK;
		p.len = skb->len;
		count_drop(CTL_DROP_UNKNOWN_L3, dir, p.len);
		emit(skb, &p, CTL_EVENT_DROP, CTL_DROP_UNKNOWN_L3, CTL_VERDICT_DROPPED, dir, d.ep_id, 0, 0, 0,
		     CTL_MATCH_NONE, 0, 0, p.len, 1);
		return TC_ACT_SHOT;
	}
	__u16 bounced_port;
	if (!host && dir == CTL_DIR_EGRESS && proxy_bounced(skb, &bounced_port))
		return to_proxy(skb, &p, bounced_port, CTL_DIR_INGRESS, 0, 1, 0, 0);   /* decided in to_container (lib/proxy.h) */
	if (host) {
		/* forwarded packets (to and from pods, routed through) are the pods' business, not the host's */
		st = state.lookup(&zero);
		if (ipcache_identity(st ? st->active_slot & 1 : 0, dir == CTL_DIR_INGRESS ? p.daddr : p.saddr) !=
		    CTL_IDENTITY_HOST) {
			if (dir == CTL_DIR_INGRESS)
				proxy_take_forwarded(skb, &p);   /* an L7-policed connection from another node */
			return TC_ACT_OK;
		}
	}
	now = bpf_ktime_get_coarse_ns();   /* lifetimes only: the coarse clock is enough and cheaper */

	/* services first: policy and conntrack see the backend (lib/lb.h) */
	if (!host && dir == CTL_DIR_EGRESS && !p.related && endpoints.lookup(&ifindex)) {
		int lb = lb_translate(skb, &p, ifindex, now, &nat_addr, &nat_port, &svc_id, 0, &hairpin);
		if (lb == LB_NO_BACKEND) {
			decide(&d, &p, ifindex, dir);
			count_drop(CTL_DROP_NO_SERVICE, dir, p.len);
			emit(skb, &p, CTL_EVENT_DROP, CTL_DROP_NO_SERVICE, CTL_VERDICT_DROPPED, dir, d.ep_id, d.own_id,
			     d.peer_id, 0, CTL_MATCH_NONE, 0, p.tcp_flags, p.len, 1);
			if (lb_reject(skb) == TC_ACT_REDIRECT)
				return TC_ACT_REDIRECT;
			return TC_ACT_SHOT;
		}
		if (lb == LB_ERROR)
			return TC_ACT_SHOT;
	}

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

	/* the fast path: a packet of a tracked connection, one lookup (two for a forward packet) */
	ct_fill_key(&key, &p, dir, ifindex, 0);
	ct = conntrack.lookup(&key);
	if (!ct) {
		/* a hairpin connection's replies leave the endpoint too: its entry is the same direction, reversed */
		__u8 rdir = dir == CTL_DIR_EGRESS && p.daddr == LB_LOOPBACK ? CTL_DIR_EGRESS :
			    dir == CTL_DIR_EGRESS ? CTL_DIR_INGRESS : CTL_DIR_EGRESS;
		ct_fill_key(&key, &p, rdir, ifindex, 1);
		ct = conntrack.lookup(&key);
		is_reply = 1;
	}
	if (ct && !is_reply && !host && dir == CTL_DIR_INGRESS && ct_other_side(skb, ct)) {
		keep = ct->proxy_upstream;    /* a live upstream connection's entry: not overwritten */
		ct = 0;
	}
	if (ct && (ct_expired(ct, p.proto, now) || (!is_reply && ct_reopened(ct, &p)))) {
		conntrack.delete(&key);
		ct = 0;
	}
	if (ct) {
		if (!is_reply) {
			st = state.lookup(&zero);
			if (ct->verdict == CTL_VERDICT_DROPPED || !st || ct->policy_rev != (__u32)st->revision) {
				ct->last_seen = now;
				if (revalidate(skb, &p, ct, ifindex, dir) == TC_ACT_SHOT)
					return TC_ACT_SHOT;
			}
		}
		if (is_reply && ct->nat_addr) {
			if (key.dir == CTL_DIR_EGRESS && dir == CTL_DIR_EGRESS) {
				/* a hairpin reply: from the frontend to the client itself, straight back in */
				__u32 l4_off = lb_l4_off(skb);
				__u32 client = p.saddr;
				if (!l4_off || lb_rewrite_dst(skb, l4_off, p.proto, p.daddr, client, p.dport, p.dport) < 0)
					return TC_ACT_SHOT;
				p.daddr = client;
				hairpin = 1;
			}
			if (lb_rev_nat(skb, &p, ct) < 0)
				return TC_ACT_SHOT;
		}
		__u8 *seen_flags = is_reply ? &ct->rev_flags : &ct->fwd_flags;
		__u8 *reported = is_reply ? &ct->rev_reported : &ct->fwd_reported;
		__u64 *last_report = is_reply ? &ct->rev_report : &ct->fwd_report;
		__u32 *pkts = is_reply ? &ct->rev_pkts : &ct->fwd_pkts;
		__u32 *bytes = is_reply ? &ct->rev_bytes : &ct->fwd_bytes;
		struct monitor_config *cfg = monitor_config.lookup(&zero);
		int monitor = ct_monitor(last_report, reported, p.tcp_flags, cfg, now);

		ct->last_seen = now;
		*seen_flags |= p.tcp_flags;
		*pkts += 1;
		*bytes += p.len;
		if (trace_wanted(cfg, rx_obs(obs), monitor)) {
			/* identities in packet order: the packet leaves the endpoint iff dir is egress; packets and bytes
			 * since this side's last trace */
			__u32 src = dir == CTL_DIR_EGRESS ? ct->own_identity : ct->peer_identity;
			__u32 dst = dir == CTL_DIR_EGRESS ? ct->peer_identity : ct->own_identity;
			emit(skb, &p, CTL_EVENT_TRACE, obs, ct->verdict, key.dir, ct->ep_id, src, dst, ct->cookie,
			     ct->match_type, is_reply, *seen_flags, *bytes, *pkts);
			*pkts = 0;
			*bytes = 0;
		}
		if (!host && !is_reply && ct->proxy_port)
			return to_proxy(skb, &p, ct->proxy_port, dir, ct->ep_id, 0,
					dir == CTL_DIR_EGRESS ? ct->own_identity : ct->peer_identity,
					dir == CTL_DIR_EGRESS ? ct->peer_identity : ct->own_identity);
		if (!host && is_reply && ct->proxy_upstream && dir == CTL_DIR_EGRESS)
			return to_proxy(skb, &p, 0, dir, ct->ep_id, 0, ct->own_identity, ct->peer_identity);
		return hairpin ? lb_hairpin_redirect(skb) : TC_ACT_OK;
	}

	/* a new connection: decide policy with the active revision */
	if (!host && dir == CTL_DIR_INGRESS)
		lb_xlated_svc(&p, now);   /* the backend's end of a translated connection names its service (lib/lb.h) */
	if (!decide(&d, &p, ifindex, dir))
		return TC_ACT_OK;
	__u32 src_id = dir == CTL_DIR_EGRESS ? d.own_id : d.peer_id;
	__u32 dst_id = dir == CTL_DIR_EGRESS ? d.peer_id : d.own_id;
	fresh.verdict = CTL_VERDICT_FORWARDED;
	if (d.enforce) {
		if (!d.v.allowed) {
			if (!d.audit)
				return drop_denied(skb, &p, &d, dir);
			fresh.verdict = CTL_VERDICT_AUDIT;
		}
		emit(skb, &p, CTL_EVENT_POLICY_VERDICT, 0, fresh.verdict, dir, d.ep_id, src_id, dst_id, d.v.cookie,
		     d.v.match_type, 0, p.tcp_flags, p.len, 1);
	}

	fresh.last_seen = now;
	fresh.cookie = d.v.cookie;
	fresh.match_type = d.v.match_type;
	fresh.peer_identity = d.peer_id;
	fresh.own_identity = d.own_id;
	fresh.ep_id = d.ep_id;
	fresh.policy_rev = d.revision;
	fresh.fwd_flags = p.tcp_flags;
	fresh.nat_addr = nat_addr;
	fresh.nat_port = nat_port;
	if (!host) {
		if (dir == CTL_DIR_INGRESS && from_proxy_upstream(skb, &d))
			fresh.proxy_upstream = 1;
		else
			fresh.proxy_port = proxy_port_of(&d, &p);
		if (fresh.proxy_port && dir == CTL_DIR_INGRESS)
			proxy_from_source_too(skb, &p, fresh.proxy_port);
	}
	/* CT_NEW: always worth a trace (Cilium's __ct_lookup sets `monitor` for a new connection) */
	struct monitor_config *cfg = monitor_config.lookup(&zero);
	ct_monitor(&fresh.fwd_report, &fresh.fwd_reported, p.tcp_flags, cfg, now);
	int traced = trace_wanted(cfg, rx_obs(obs), 1);
	if (!traced) {   /* counted towards this side's next trace */
		fresh.fwd_pkts = 1;
		fresh.fwd_bytes = p.len;
	}
	/* A connection redirected here (ingress rules.http) keeps no entry at the destination's veth: its later packets
	 * go to the proxy where they enter the node (proxy_from_source_too, proxy_take_forwarded) and never come here,
	 * while an entry would claim the tuple for the proxy's upstream connection from the same address and port
	 * (ct_other_side): its SYN sent back to the proxy, a 1 s retransmission each. A retransmitted SYN that comes
	 * here is decided again, as the first one was. */
	ct_fill_key(&key, &p, dir, ifindex, 0);
	if (!keep && !(fresh.proxy_port && dir == CTL_DIR_INGRESS))
		conntrack.update(&key, &fresh);
	__u32 cdir = dir;
	__u64 *created = ct_created.lookup(&cdir);
	if (created)
		*created += 1;   /* per CPU: no atomics needed */
	if (traced)
		emit(skb, &p, CTL_EVENT_TRACE, obs, fresh.verdict, dir, d.ep_id, src_id, dst_id, d.v.cookie,
		     d.v.match_type, 0, p.tcp_flags, p.len, 1);
	if (fresh.proxy_port)
		return to_proxy(skb, &p, fresh.proxy_port, dir, d.ep_id, 0, src_id, dst_id);
	return hairpin ? lb_hairpin_redirect(skb) : TC_ACT_OK;
}

#endif
