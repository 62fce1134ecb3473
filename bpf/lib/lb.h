/* Service load balancing per packet (kube-proxy's job), after Cilium's bpf/lib/lb.h: a connection to a frontend
 * (VIP:port/proto) gets one backend, chosen at its first packet (random; ClientIP affinity first when the service
 * has it), remembered in lb_conns for every later packet; the destination is rewritten before policy, so policy
 * is decided on the backend (Cilium's order in bpf_lxc.c: lb4_local, then policy). Replies get the frontend back
 * from the connection's conntrack entry (nat_addr/nat_port). A service with no backend taking new connections
 * drops with DROP_NO_SERVICE and answers ICMP port unreachable, as Cilium's SERVICE_NO_BACKEND_RESPONSE=reject
 * (tail_no_service_ipv4), so the client fails at once instead of timing out. */
#ifndef CTL_LB_H
#define CTL_LB_H

#include "maps.h"
#include "conntrack.h"

#define LB_L3_OFF 14                 /* Ethernet */
#define LB_REJECT_MARK 0x0c7e1b00    /* on the ICMP answer we redirect to the client: to_container lets it pass */
#define LB_REJECT_LEN (14 + 20 + 8 + 28)   /* eth + ip + icmp + the quoted IP header and 8 bytes of L4 */
/* A client that gets itself as backend (hairpin) would see its own address as source and drop the packet: its
 * source becomes this link-local address instead, Cilium's service loopback address (IPV4_LOOPBACK,
 * --ipv4-service-loopback-address 169.254.42.1), and the packet goes straight back into the endpoint. */
#define LB_LOOPBACK 0x012afea9U    /* 169.254.42.1 in network byte order, read as a little-endian u32 */

/* outcome of lb_translate() */
#define LB_NONE      0   /* no service at this destination: the packet goes on untouched */
#define LB_XLATED    1   /* the destination is a backend now (p updated) */
#define LB_NO_BACKEND 2  /* a service without a backend for a new connection: drop (158) */
#define LB_ERROR     3   /* the packet could not be rewritten: drop */

/* slot: the revision slot, with an LB_KIND_* bit for the entries of that kind */
static __always_inline struct lb_svc_val *lb_lookup(__u8 slot, __u32 vip, __u16 port, __u8 proto, __u16 bslot)
{
	struct lb_svc_key k = {};

	k.slot = slot & 1;
	k.proto = proto | (slot & (LB_KIND_ORIGINAL | LB_KIND_SKIP));
	k.backend_slot = bslot;
	k.vip = vip;
	k.dport = port;
	return lb_services.lookup(&k);
}

/* A backend for a new connection: the client's affinity while it holds, else random among the active ones
 * (Cilium's default algorithm; a backend slot number is uniform in 1..count). 0: none. */
static __always_inline __u32 lb_pick(const struct lb_svc_val *svc, __u8 slot, const struct pkt *p, __u64 now)
{
	struct lb_affinity_key ak = {};
	struct lb_affinity_val *aff;
	struct lb_svc_val *bs;
	struct lb_backend *be;
	__u32 id;

	if (!svc->count)
		return 0;
	ak.client = p->saddr;
	ak.svc_id = svc->svc_id;
	if (svc->flags & LB_F_AFFINITY) {
		aff = lb_affinity.lookup(&ak);
		if (aff && now - aff->last_used <= (__u64)svc->affinity_timeout * NSEC) {
			be = lb_backends.lookup(&aff->backend_id);
			if (be && be->state == LB_BACKEND_ACTIVE) {
				aff->last_used = now;
				return aff->backend_id;
			}
		}
	}
	bs = lb_lookup(slot, p->daddr, p->dport, p->proto, (bpf_get_prandom_u32() % svc->count) + 1);
	if (!bs)
		return 0;
	id = bs->backend_id;
	if (svc->flags & LB_F_AFFINITY) {
		struct lb_affinity_val nv = {};
		nv.last_used = now;
		nv.backend_id = id;
		lb_affinity.update(&ak, &nv);
	}
	return id;
}

/* skipRedirectFromBackend of a CiliumLocalRedirectPolicy: a packet from one of the redirect's own backends to its
 * frontend is not sent back to that backend but goes where the frontend went before the redirect: the service it
 * replaced (*slot gets LB_KIND_ORIGINAL, so lb_pick picks among that service's backends), or, for an address that
 * was no service, nowhere: NULL, the packet goes on untranslated. Cilium: lb4_skip_xlate_from_ctx_to_svc
 * (bpf/lib/lb.h) over its skip_lb4 map, keyed by the backend pod's netns cookie; here the pod's address. */
static __always_inline struct lb_svc_val *lb_skip_from_backend(struct lb_svc_val *svc, __u8 *slot,
							       const struct pkt *p)
{
	struct lb_svc_key k = {};

	if (!(svc->flags & LB_F_SKIP_FROM_BACKEND))
		return svc;
	k.slot = *slot & 1;
	k.proto = p->proto | LB_KIND_SKIP;
	k.backend_slot = (__u16)p->saddr;
	k.pad = (__u16)(p->saddr >> 16);
	k.vip = p->daddr;
	k.dport = p->dport;
	if (!lb_services.lookup(&k))
		return svc;
	*slot |= LB_KIND_ORIGINAL;
	return lb_lookup(*slot, p->daddr, p->dport, p->proto, 0);
}

/* The backend's end of a translated connection sees a packet to the backend like any other. So that its events
 * name the service too (flows' destination_service), the client's side leaves a marker in lb_conns: the tuple as
 * translated, under ifindex 0, which no interface has, written when the backend is picked and on every SYN of
 * the connection (a retransmission). The backend's side reads it for the first packet of a connection, trusting
 * it for LB_XLATED_WINDOW only: an LRU entry outlives its connection, and a later direct connection on the same
 * ports must not be named after the service. */
#define LB_XLATED_WINDOW (5ULL * NSEC)

static __always_inline void lb_xlated_key(struct lb_conn_key *k, const struct pkt *p)
{
	k->saddr = p->saddr;
	k->vip = p->daddr;
	k->sport = p->sport;
	k->dport = p->dport;
	k->proto = p->proto;
	k->ifindex = 0;
}

static __always_inline void lb_mark_xlated(const struct pkt *p, __u32 svc_id, __u32 backend_id, __u64 now)
{
	struct lb_conn_key k = {};
	struct lb_conn v = {};

	lb_xlated_key(&k, p);
	v.last_seen = now;
	v.backend_id = backend_id;
	v.svc_id = svc_id;
	lb_conns.update(&k, &v);
}

/* p: the first packet of a connection at the backend's end; its service, if the client's side translated it */
static __always_inline void lb_xlated_svc(struct pkt *p, __u64 now)
{
	struct lb_conn_key k = {};
	struct lb_conn *c;

	if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP)
		return;
	lb_xlated_key(&k, p);
	c = lb_conns.lookup(&k);
	if (c && now - c->last_seen <= LB_XLATED_WINDOW)
		p->svc_id = c->svc_id;
}

/* Rewrite destination address and port (TCP/UDP), checksums included. */
static __always_inline int lb_rewrite_dst(struct __sk_buff *skb, __u32 l4_off, __u8 proto, __u32 old_addr,
					  __u32 new_addr, __u16 old_port, __u16 new_port)
{
	__u32 csum_off = l4_off + (proto == IPPROTO_TCP ? 16 : 6);
	__u64 flags = BPF_F_PSEUDO_HDR | 4;
	__u16 np = ctl_htons(new_port), op = ctl_htons(old_port);

	if (proto == IPPROTO_UDP)
		flags |= BPF_F_MARK_MANGLED_0;
	if (bpf_l4_csum_replace(skb, csum_off, old_addr, new_addr, flags) < 0)
		return -1;
	if (bpf_l3_csum_replace(skb, LB_L3_OFF + 10, old_addr, new_addr, 4) < 0)
		return -1;
	if (bpf_skb_store_bytes(skb, LB_L3_OFF + 16, &new_addr, 4, 0) < 0)
		return -1;
	if (np != op) {
		if (bpf_l4_csum_replace(skb, csum_off, op, np, 2 | (proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0)) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, l4_off + 2, &np, 2, 0) < 0)
			return -1;
	}
	return 0;
}

/* Rewrite source address and port: a reply gets its frontend back. */
static __always_inline int lb_rewrite_src(struct __sk_buff *skb, __u32 l4_off, __u8 proto, __u32 old_addr,
					  __u32 new_addr, __u16 old_port, __u16 new_port)
{
	__u32 csum_off = l4_off + (proto == IPPROTO_TCP ? 16 : 6);
	__u64 mangled = proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	__u16 np = ctl_htons(new_port), op = ctl_htons(old_port);

	if (bpf_l4_csum_replace(skb, csum_off, old_addr, new_addr, BPF_F_PSEUDO_HDR | 4 | mangled) < 0)
		return -1;
	if (bpf_l3_csum_replace(skb, LB_L3_OFF + 10, old_addr, new_addr, 4) < 0)
		return -1;
	if (bpf_skb_store_bytes(skb, LB_L3_OFF + 12, &new_addr, 4, 0) < 0)
		return -1;
	if (np != op) {
		if (bpf_l4_csum_replace(skb, csum_off, op, np, 2 | mangled) < 0)
			return -1;
		if (bpf_skb_store_bytes(skb, l4_off, &np, 2, 0) < 0)
			return -1;
	}
	return 0;
}

static __always_inline __u32 lb_l4_off(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + LB_L3_OFF;

	if ((void *)(ip + 1) > end)
		return 0;
	return LB_L3_OFF + ip->ihl * 4;
}

/* A packet leaving an endpoint (or arriving at the node): to a frontend? Then pick or recall the backend and
 * rewrite the destination; p, the packet as the rest of the program sees it, then names the backend. *svc_id and
 * the frontend are returned for the conntrack entry (replies) and events. */
static __always_inline int lb_translate(struct __sk_buff *skb, struct pkt *p, __u32 ifindex, __u64 now,
					__u32 *frontend, __u16 *frontend_port, __u32 *svc_id, int nodeport_only,
					__u8 *hairpin)
{
	struct lb_svc_val *svc;
	struct lb_conn_key ck = {};
	struct lb_conn *conn;
	struct lb_backend *be = 0;
	struct dp_state *st;
	__u32 zero = 0, backend_id = 0, l4_off;
	__u8 slot, picked = 0;

	if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP)
		return LB_NONE;
	st = state.lookup(&zero);
	slot = st ? st->active_slot & 1 : 0;
	svc = lb_lookup(slot, p->daddr, p->dport, p->proto, 0);
	if (svc)
		svc = lb_skip_from_backend(svc, &slot, p);
	if (!svc || (nodeport_only && !(svc->flags & LB_F_NODEPORT)))
		return LB_NONE;     /* from outside the node only NodePort frontends exist (ClusterIPs are internal) */
	*frontend = p->daddr;
	*frontend_port = p->dport;
	*svc_id = svc->svc_id;
	p->svc_id = svc->svc_id;    /* events name the service: the packet names the backend from here on */

	ck.saddr = p->saddr;
	ck.vip = p->daddr;
	ck.sport = p->sport;
	ck.dport = p->dport;
	ck.proto = p->proto;
	ck.ifindex = ifindex;
	conn = lb_conns.lookup(&ck);
	if (conn) {
		be = lb_backends.lookup(&conn->backend_id);
		if (be) {
			/* the same tuple again: a new connection when TCP opens it anew after its last one closed (or
			 * was forgotten), or when a datagram flow was idle for longer than conntrack keeps it */
			if (p->proto == IPPROTO_TCP) {
				if ((p->tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN) {
					struct ct_key k = {};
					struct ct_entry *ct;
					k.saddr = p->saddr;
					k.daddr = be->addr;
					k.sport = p->sport;
					k.dport = be->port;
					k.proto = p->proto;
					/* NodePort connections are tracked on the device, as they arrived */
					k.dir = nodeport_only ? CTL_DIR_INGRESS : CTL_DIR_EGRESS;
					k.ifindex = ifindex;
					ct = conntrack.lookup(&k);
					if (!ct || ((ct->fwd_flags | ct->rev_flags) & (TCP_FIN | TCP_RST)))
						be = 0;
				}
			} else if (now - conn->last_seen > CT_LIFETIME_NONTCP) {
				be = 0;
			}
		}
		if (be) {
			backend_id = conn->backend_id;
			/* read for datagram flows only (above): a TCP connection's packets leave the entry unwritten,
			 * no cache line dirtied per packet (its SYN decides, from conntrack) */
			if (p->proto != IPPROTO_TCP)
				conn->last_seen = now;
		}
	}
	if (!be) {
		backend_id = lb_pick(svc, slot, p, now);
		if (backend_id)
			be = lb_backends.lookup(&backend_id);
		if (!be)
			return LB_NO_BACKEND;
		struct lb_conn nc = {};
		nc.last_seen = now;
		nc.backend_id = backend_id;
		nc.svc_id = svc->svc_id;
		lb_conns.update(&ck, &nc);
		picked = 1;
	}
	l4_off = lb_l4_off(skb);
	if (!l4_off || lb_rewrite_dst(skb, l4_off, p->proto, p->daddr, be->addr, p->dport, be->port) < 0)
		return LB_ERROR;
	p->daddr = be->addr;
	p->dport = be->port;
	p->policy_port = be->port;
	p->ev_dport = be->port;
	if (picked || (p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN))
		lb_mark_xlated(p, svc->svc_id, backend_id, now);
	if (be->addr == p->saddr) {
		if (lb_rewrite_src(skb, l4_off, p->proto, p->saddr, LB_LOOPBACK, p->sport, p->sport) < 0)
			return LB_ERROR;
		p->saddr = LB_LOOPBACK;
		*hairpin = 1;
	}
	return LB_XLATED;
}

/* Send a hairpin packet straight back into the endpoint it came from: Ethernet addresses swapped, marked so that
 * to_container lets it through (its policy was decided here, on the way out; Cilium skips policy for loopback
 * service traffic too). */
static __always_inline int lb_hairpin_redirect(struct __sk_buff *skb)
{
	__u8 eth[12];

	if (bpf_skb_load_bytes(skb, 0, eth, 12) < 0 || bpf_skb_store_bytes(skb, 0, eth + 6, 6, 0) < 0 ||
	    bpf_skb_store_bytes(skb, 6, eth, 6, 0) < 0)
		return TC_ACT_SHOT;
	skb->mark = LB_REJECT_MARK;
	return bpf_redirect(skb->ifindex, 0);
}

/* A reply of a translated connection, on its way to the client: the frontend as its source again. */
static __always_inline int lb_rev_nat(struct __sk_buff *skb, struct pkt *p, const struct ct_entry *ct)
{
	__u32 l4_off = lb_l4_off(skb);

	if (!l4_off || lb_rewrite_src(skb, l4_off, p->proto, p->saddr, ct->nat_addr, p->sport, ct->nat_port) < 0)
		return -1;
	p->saddr = ct->nat_addr;
	p->sport = ct->nat_port;
	p->ev_sport = ct->nat_port;
	return 0;
}

/* Turn the packet into ICMP port unreachable from the frontend to the client and send it back where it came from
 * (Cilium's __tail_no_service_ipv4: generate_icmp4_reply(ICMP_DEST_UNREACH, ICMP_PORT_UNREACH), redirect_self). */
static __always_inline int lb_reject(struct __sk_buff *skb)
{
	__u8 quoted[28];
	__u8 eth[12];
	struct iphdr ip = {};
	struct icmphdr icmp = {};
	__u32 saddr, daddr;
	__s64 csum;

	if (bpf_skb_load_bytes(skb, 0, eth, 12) < 0 || bpf_skb_load_bytes(skb, LB_L3_OFF, quoted, 28) < 0)
		return -1;
	if ((quoted[0] & 0x0f) != 5)
		return -1;    /* IP options: would quote them too; not worth it here */
	__builtin_memcpy(&saddr, quoted + 12, 4);
	__builtin_memcpy(&daddr, quoted + 16, 4);
	if (bpf_skb_change_tail(skb, LB_REJECT_LEN, 0) < 0)
		return -1;
	ip.version = 4;
	ip.ihl = 5;
	ip.tot_len = ctl_htons(LB_REJECT_LEN - LB_L3_OFF);
	ip.ttl = 64;
	ip.protocol = IPPROTO_ICMP;
	ip.saddr = daddr;
	ip.daddr = saddr;
	csum = bpf_csum_diff(0, 0, (__be32 *)&ip, sizeof(ip), 0);
	if (csum < 0)
		return -1;
	csum = (csum & 0xffff) + (csum >> 16);
	csum = (csum & 0xffff) + (csum >> 16);
	ip.check = ~csum & 0xffff;
	icmp.type = ICMP_DEST_UNREACH;
	icmp.code = ICMP_PORT_UNREACH;
	csum = bpf_csum_diff(0, 0, (__be32 *)&icmp, sizeof(icmp), 0);
	if (csum < 0)
		return -1;
	csum = bpf_csum_diff(0, 0, (__be32 *)quoted, sizeof(quoted), csum);
	if (csum < 0)
		return -1;
	csum = (csum & 0xffff) + (csum >> 16);
	csum = (csum & 0xffff) + (csum >> 16);
	icmp.checksum = ~csum & 0xffff;
	/* Ethernet: back to the sender */
	if (bpf_skb_store_bytes(skb, 0, eth + 6, 6, 0) < 0 || bpf_skb_store_bytes(skb, 6, eth, 6, 0) < 0)
		return -1;
	if (bpf_skb_store_bytes(skb, LB_L3_OFF, &ip, sizeof(ip), 0) < 0 ||
	    bpf_skb_store_bytes(skb, LB_L3_OFF + 20, &icmp, sizeof(icmp), 0) < 0 ||
	    bpf_skb_store_bytes(skb, LB_L3_OFF + 28, quoted, sizeof(quoted), 0) < 0)
		return -1;
	skb->mark = LB_REJECT_MARK;
	return bpf_redirect(skb->ifindex, 0);
}

#endif
