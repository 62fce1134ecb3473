/* NodePort for traffic from outside the node, like Cilium's bpf_host.c on its native devices (nodeport.h):
 * nodeport_from_netdev (in bpf_host.c's from_netdev: tc ingress of a device named by install --devices) translates
 * a packet to a NodePort frontend (the node's address + port) to a backend before the node routes it;
 * nodeport_to_netdev (in to_netdev: tc egress of that device) gives the replies the frontend back. The connection
 * lives in conntrack keyed on the device (dir ingress, as the client sent it, destination the backend), its
 * frontend in nat_addr/nat_port. Policy is the backend's ingress policy in to_container, with the client's identity
 * (world, or its CIDR identity).
 *
 * A backend on another node (externalTrafficPolicy Cluster), as Cilium's default kube-proxy replacement does it in
 * SNAT mode (bpf/lib/nodeport.h nodeport_lb4 -> tail_nodeport_nat_egress_ipv4; replies: nodeport_lb4's no-service
 * branch -> tail_nodeport_nat_ingress_ipv4 -> rev_nodeport_lb4, cilium/cilium f541499b): the packet, DNATed to the
 * backend, also gets the node's own address and a port of NODEPORT_PORT_MIN_NAT..MAX_NAT as its source (lb_snat),
 * so the backend answers this node; the reply is reverse-SNATed to the client, gets the frontend back as its source
 * and goes out the client's way. Both leave by redirect to the device the FIB names (fib_redirect_v4): handed to
 * the stack, a packet with one of the node's addresses as source arriving on a device is a martian. Which backends
 * are remote is the FIB's answer too: the route to the backend does not end at an endpoint's veth (Cilium asks
 * its endpoints map, __lookup_ip4_endpoint). externalTrafficPolicy Local never gets here: its frontends have this
 * node's backends only (Cilium filters them the same way, pkg/loadbalancer; none: DROP_NO_SERVICE). */
#ifndef CTL_NODEPORT_H
#define CTL_NODEPORT_H

#include "enforce.h"
#include "lb.h"
#include "notify.h"
#include "parse.h"

/* NAT ports for NodePort SNAT: above the NodePort range, so a reply can never be taken for a NodePort frontend
 * (Cilium's NODEPORT_PORT_MIN_NAT = NODEPORT_PORT_MAX + 1 = 32768 .. NODEPORT_PORT_MAX_NAT = 65535, bpf/node_config.h) */
#define NP_NAT_PORT_MIN 32768
#define NP_NAT_PORT_MAX 65535
/* tries before a connection is dropped for want of a free port (Cilium's SNAT_COLLISION_RETRIES, bpf/lib/nat.h) */
#define NP_NAT_RETRIES 32
#define NP_SNAT_FWD 0
#define NP_SNAT_REV 1
/* BPF_FIB_LOOKUP_SRC (uapi/linux/bpf.h, kernel 6.7+), which BCC's own copy of the header lacks */
#define NP_FIB_LOOKUP_SRC (1U << 4)
/* bpf_redirect_neigh(ifindex, params, plen, flags) as the kernel defines it (BCC 0.26 declares three arguments) */
static long (*np_redirect_neigh)(__u32 ifindex, void *params, int plen, __u64 flags) =
	(void *)BPF_FUNC_redirect_neigh;

static __always_inline void np_snat_key(struct lb_snat_key *k, __u32 saddr, __u32 daddr, __u16 sport, __u16 dport,
					__u8 proto, __u8 dir)
{
	k->saddr = saddr;
	k->daddr = daddr;
	k->sport = sport;
	k->dport = dport;
	k->proto = proto;
	k->dir = dir;
}

/* The route to `daddr` as the node would forward a packet arriving on this device; with want_src, the source
 * address the node would give it (BPF_FIB_LOOKUP_SRC, kernel 6.7+; Cilium assumes IPV4_DIRECT_ROUTING instead
 * because older kernels lack it). Returns BPF_FIB_LKUP_RET_*. */
static __always_inline int np_fib(struct __sk_buff *skb, struct bpf_fib_lookup *fib, __u32 daddr, int want_src)
{
	fib->family = 2;   /* AF_INET */
	fib->ifindex = skb->ifindex;
	fib->ipv4_dst = daddr;
	return bpf_fib_lookup(skb, fib, sizeof(*fib), want_src ? NP_FIB_LOOKUP_SRC : 0);
}

/* Send the packet out the device the FIB named (Cilium's fib_redirect: Ethernet addresses from the lookup, or the
 * neighbour subsystem's when it has none yet), marked so that to_netdev there lets it pass: it was translated and
 * decided here. */
static __always_inline int np_redirect(struct __sk_buff *skb, struct bpf_fib_lookup *fib, int ret)
{
	skb->mark = LB_REJECT_MARK;
	if (ret == BPF_FIB_LKUP_RET_NO_NEIGH)
		return np_redirect_neigh(fib->ifindex, 0, 0, 0);
	if (bpf_skb_store_bytes(skb, 0, fib->dmac, 6, 0) < 0 || bpf_skb_store_bytes(skb, 6, fib->smac, 6, 0) < 0)
		return TC_ACT_SHOT;
	return bpf_redirect(fib->ifindex, 0);
}

/* A packet of a SNATed NodePort connection as it leaves the node, traced at to-network (Cilium's TRACE_TO_NETWORK)
 * with the connection's own addresses, when conntrack marks it worth a trace: client -> backend (the service
 * named), or a reply backend -> client. The node's address in between is lb_snat's. */
static __always_inline void np_trace(struct __sk_buff *skb, const struct pkt *p, struct ct_entry *ct, __u8 is_reply)
{
	__u32 zero = 0;
	struct dp_state *st = state.lookup(&zero);
	struct monitor_config *cfg = monitor_config.lookup(&zero);
	__u8 slot = st ? st->active_slot & 1 : 0;
	__u64 now = bpf_ktime_get_coarse_ns();
	int monitor = is_reply ? ct_monitor(&ct->rev_report, &ct->rev_reported, p->tcp_flags, cfg, now) :
				 ct_monitor(&ct->fwd_report, &ct->fwd_reported, p->tcp_flags, cfg, now);
	__u32 *pkts = is_reply ? &ct->rev_pkts : &ct->fwd_pkts;
	__u32 *bytes = is_reply ? &ct->rev_bytes : &ct->fwd_bytes;

	*pkts += 1;
	*bytes += p->len;
	if (!trace_wanted(cfg, CTL_OBS_TO_NETWORK, monitor))
		return;
	emit(skb, p, CTL_EVENT_TRACE, CTL_OBS_TO_NETWORK, CTL_VERDICT_FORWARDED,
	     CTL_DIR_INGRESS, 0, ipcache_identity(slot, p->saddr), ipcache_identity(slot, p->daddr), 0, CTL_MATCH_NONE,
	     is_reply, is_reply ? ct->rev_flags : ct->fwd_flags, *bytes, *pkts);
	*pkts = 0;
	*bytes = 0;
}

/* Keeps the compiler from reusing an address inside the context (&skb->ifindex) across calls: the verifier refuses
 * a load through a context pointer that was moved. */
#define NP_CTX_BARRIER(skb) asm volatile("" : "+r"(skb))

/* Drop a packet of a NodePort connection to another node: counted, with a drop event (client -> backend) */
static __always_inline int np_drop(struct __sk_buff *skb, const struct pkt *p, __u8 reason)
{
	__u32 zero = 0;

	NP_CTX_BARRIER(skb);
	struct dp_state *st = state.lookup(&zero);
	__u8 slot = st ? st->active_slot & 1 : 0;

	count_drop(reason, CTL_DIR_INGRESS, p->len);
	emit(skb, p, CTL_EVENT_DROP, reason, CTL_VERDICT_DROPPED, CTL_DIR_INGRESS, 0, ipcache_identity(slot, p->saddr),
	     ipcache_identity(slot, p->daddr), 0, CTL_MATCH_NONE, 0, p->tcp_flags, p->len, 1);
	return TC_ACT_SHOT;
}

/* A new connection to a backend on another node: a NAT port for it (the client's own when it is in the range and
 * free, as Cilium's __snat_try_keep_port, else random ones) and both lb_snat entries. 0: no port free. */
static __always_inline __u16 np_snat_new(const struct pkt *p, __u32 node_addr, __u32 frontend, __u16 frontend_port,
					 __u32 ifindex)
{
	struct lb_snat_key k = {};
	struct lb_snat_val v = {};
	struct lb_snat_val *taken;
	__u16 port = p->sport;
	int i;

	v.addr = p->saddr;
	v.port = p->sport;
	v.svc_id = p->svc_id;
	v.frontend = frontend;
	v.frontend_port = frontend_port;
	v.ifindex = ifindex;
	for (i = 0; i < NP_NAT_RETRIES; i++) {
		if (port < NP_NAT_PORT_MIN)
			port = NP_NAT_PORT_MIN + bpf_get_prandom_u32() % (NP_NAT_PORT_MAX - NP_NAT_PORT_MIN + 1);
		np_snat_key(&k, p->daddr, node_addr, p->dport, port, p->proto, NP_SNAT_REV);
		taken = lb_snat.lookup(&k);
		if (!taken || (taken->addr == p->saddr && taken->port == p->sport)) {
			lb_snat.update(&k, &v);
			np_snat_key(&k, p->saddr, p->daddr, p->sport, p->dport, p->proto, NP_SNAT_FWD);
			v = (struct lb_snat_val){};
			v.addr = node_addr;
			v.port = port;
			lb_snat.update(&k, &v);
			return port;
		}
		port = 0;
	}
	return 0;
}

/* The client's packet, already DNATed to a remote backend (p names it): the node's address as its source, out the
 * device towards the backend. */
static __always_inline int np_snat_fwd(struct __sk_buff *skb, struct pkt *p, const struct lb_snat_val *nat,
				       struct ct_entry *ct)
{
	struct bpf_fib_lookup fib = {};
	__u32 l4_off = lb_l4_off(skb);
	int ret;

	np_trace(skb, p, ct, 0);   /* the connection's own addresses: client -> backend */
	if (!l4_off || lb_rewrite_src(skb, l4_off, p->proto, p->saddr, nat->addr, p->sport, nat->port) < 0)
		return TC_ACT_SHOT;
	ret = np_fib(skb, &fib, p->daddr, 0);
	if (ret != BPF_FIB_LKUP_RET_SUCCESS && ret != BPF_FIB_LKUP_RET_NO_NEIGH)
		return np_drop(skb, p, CTL_DROP_NO_FIB);
	return np_redirect(skb, &fib, ret);
}

/* A packet arriving on a device that is no NodePort frontend's: the reply of a remote backend to a SNATed
 * connection? Then back to its client, from the frontend. TC_ACT_OK: not one. */
static __always_inline int np_snat_rev(struct __sk_buff *skb, struct pkt *p)
{
	struct lb_snat_key k = {};
	struct lb_snat_val *nat;
	struct ct_key ck = {};
	struct ct_entry *ct;
	struct bpf_fib_lookup fib = {};
	__u32 l4_off, node_addr = p->daddr, backend = p->saddr;
	__u16 nat_port = p->dport, backend_port = p->sport;
	int ret;

	if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP)
		return TC_ACT_OK;
	np_snat_key(&k, p->saddr, p->daddr, p->sport, p->dport, p->proto, NP_SNAT_REV);
	nat = lb_snat.lookup(&k);
	if (!nat)
		return TC_ACT_OK;
	l4_off = lb_l4_off(skb);
	if (!l4_off || lb_rewrite_dst(skb, l4_off, p->proto, node_addr, nat->addr, nat_port, nat->port) < 0)
		return TC_ACT_SHOT;
	p->daddr = nat->addr;
	p->dport = nat->port;
	p->ev_dport = nat->port;
	ck.saddr = p->daddr;
	ck.daddr = backend;
	ck.sport = p->dport;
	ck.dport = backend_port;
	ck.proto = p->proto;
	ck.dir = CTL_DIR_INGRESS;
	ck.ifindex = nat->ifindex;
	ct = conntrack.lookup(&ck);
	if (ct) {
		ct->last_seen = bpf_ktime_get_coarse_ns();
		ct->rev_flags |= p->tcp_flags;
		np_trace(skb, p, ct, 1);   /* backend -> client */
	}
	if (lb_rewrite_src(skb, l4_off, p->proto, backend, nat->frontend, backend_port, nat->frontend_port) < 0)
		return TC_ACT_SHOT;
	ret = np_fib(skb, &fib, p->daddr, 0);
	if (ret != BPF_FIB_LKUP_RET_SUCCESS && ret != BPF_FIB_LKUP_RET_NO_NEIGH)
		return np_drop(skb, p, CTL_DROP_NO_FIB);
	return np_redirect(skb, &fib, ret);
}

/* Where the route to a new connection's backend ends: 1 on another node (out a device that is no endpoint's
 * veth), with the node's address towards it in *node_addr; 0 on this node (an endpoint, or the node itself). */
static __always_inline int np_backend_remote(struct __sk_buff *skb, __u32 backend, __u32 *node_addr)
{
	struct bpf_fib_lookup fib = {};
	struct ep_info *ep;
	__u32 oif;
	int ret = np_fib(skb, &fib, backend, 1);

	if (ret != BPF_FIB_LKUP_RET_SUCCESS && ret != BPF_FIB_LKUP_RET_NO_NEIGH)
		return 0;
	oif = fib.ifindex;
	ep = endpoints.lookup(&oif);
	if (ep && ep->ep_id != CTL_HOST_EP_ID)
		return 0;
	*node_addr = fib.ipv4_src;
	return fib.ipv4_src != 0;
}

/* A packet of a connection to a backend on another node: SNATed with its lb_snat mapping, made when missing (a new
 * connection, or one the LRU map forgot), and sent towards the backend. */
static __always_inline int np_to_remote(struct __sk_buff *skb, struct pkt *p, struct ct_entry *ct, __u32 frontend,
					__u16 frontend_port, __u32 ifindex, int fresh)
{
	struct lb_snat_key k = {};
	struct lb_snat_val *nat;
	__u32 node_addr = 0;

	np_snat_key(&k, p->saddr, p->daddr, p->sport, p->dport, p->proto, NP_SNAT_FWD);
	nat = lb_snat.lookup(&k);
	if (!nat || fresh) {
		/* a new connection makes both entries anew: one left by an earlier connection of the tuple may be gone */
		if (!np_backend_remote(skb, p->daddr, &node_addr))
			return np_drop(skb, p, CTL_DROP_NO_FIB);
		if (!np_snat_new(p, node_addr, frontend, frontend_port, ifindex))
			return np_drop(skb, p, CTL_DROP_NAT_NO_MAPPING);
		nat = lb_snat.lookup(&k);
		if (!nat)
			return np_drop(skb, p, CTL_DROP_NAT_NO_MAPPING);
	}
	return np_snat_fwd(skb, p, nat, ct);
}

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
	if (lb == LB_NONE) {
		if (p.proto == IPPROTO_TCP && (p.tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN) {
			/* a new connection sent straight to an address: an entry of its tuple left by an earlier
			 * NodePort connection must not give its replies the frontend (nodeport_to_netdev) */
			ct_fill_key(&key, &p, CTL_DIR_INGRESS, ifindex, 0);
			conntrack.delete(&key);
		}
		return np_snat_rev(skb, &p);
	}
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
		if (!ct->nodeport_snat)
			return TC_ACT_OK;   /* a backend on this node: routed to it, the client's address kept */
		return np_to_remote(skb, &p, ct, nat_addr, nat_port, ifindex, 0);
	}
	struct ct_entry fresh = {};
	__u32 node_addr = 0;
	fresh.last_seen = now;
	fresh.verdict = CTL_VERDICT_FORWARDED;
	fresh.fwd_flags = p.tcp_flags;
	fresh.nat_addr = nat_addr;
	fresh.nat_port = nat_port;
	fresh.nodeport_snat = np_backend_remote(skb, p.daddr, &node_addr);
	conntrack.update(&key, &fresh);
	if (!fresh.nodeport_snat)
		return TC_ACT_OK;
	ct = conntrack.lookup(&key);
	if (!ct)
		return TC_ACT_SHOT;
	return np_to_remote(skb, &p, ct, nat_addr, nat_port, ifindex, 1);
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
	if (!ct || !ct->nat_addr || ct->nodeport_snat)
		return TC_ACT_OK;   /* replies of SNATed connections never come this way (np_snat_rev) */
	ct->last_seen = bpf_ktime_get_coarse_ns();
	ct->rev_flags |= p.tcp_flags;
	if (lb_rev_nat(skb, &p, ct) < 0)
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

#endif
