/* Redirection to a proxy on the node (L7 HTTP through HAProxy, DNS): one entry point, proxy_redirect().
 *
 * How: tproxy by socket assignment (bpf_sk_assign at tc ingress, as Cilium's bpf/lib/proxy.h
 * ctx_redirect_to_proxy_hook / assign_socket_tcp), not DNAT. The proxy's socket then carries the connection's own
 * tuple: getsockname() is the original destination and getpeername() the client, with no original-destination
 * table to keep in step and no checksum rewrite per packet; HAProxy's `transparent` bind and a server at 0.0.0.0
 * (connect to the destination the client asked for) use it as is. DNAT would need the proxy to ask us for the
 * original destination (SO_ORIGINAL_DST is netfilter's, not ours). Socket redirection (sockmap) works between
 * local sockets only, and the pods' sockets live in other namespaces.
 *
 * bpf_sk_assign works at tc ingress only: a packet seen at tc egress of an endpoint's veth (ingress policy, in
 * to_container) is marked and bounced to the ingress of the same interface, where from_container assigns it
 * (the mark cannot come from a pod: crossing the veth between namespaces clears it). A marked packet is routed to
 * the local stack by the node namespace's rule `fwmark 0x200/0xf00 lookup 2004` + `local 0.0.0.0/0 dev lo table
 * 2004` (ciliumctl/datapath/proxyroute.py), where the assigned socket takes it whatever its destination.
 * Fail closed: no proxy socket -> the caller drops (a TCP SYN is refused with ICMP port unreachable). */
#ifndef CTL_PROXY_H
#define CTL_PROXY_H

#include "common.h"

/* Cilium's MARK_MAGIC_TO_PROXY under MARK_MAGIC_HOST_MASK (bpf/lib/common.h), the proxy port in the upper 16
 * bits as Cilium's ctx_redirect_to_proxy4 puts it (host byte order) */
#define CTL_MARK_TO_PROXY  0x0200
#define CTL_MARK_HOST_MASK 0x0F00

#define CTL_PROXY_OK      0
#define CTL_PROXY_NO_SOCK -1   /* no proxy listening (down, or not started yet): fail closed */

static __always_inline int proxy_to_socket(struct __sk_buff *skb, const struct pkt *p, __u16 proxy_port)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	long ret;

	t.ipv4.saddr = p->saddr;
	t.ipv4.daddr = p->daddr;
	t.ipv4.sport = ctl_htons(p->sport);
	t.ipv4.dport = ctl_htons(p->dport);
	if (p->proto == IPPROTO_TCP) {
		/* the proxy's socket of this connection (established, or a request socket during the handshake);
		 * a listener on the destination port in the node namespace is not ours. A socket the proxy closed
		 * (TIME_WAIT) cannot be assigned: the packet goes to the proxy's listener, which answers a stray
		 * segment with a reset (the client learns at once, as without a proxy) and a SYN with a connection */
		sk = bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
		if (sk) {
			if (sk->state != BPF_TCP_LISTEN && sk->state != BPF_TCP_TIME_WAIT) {
				ret = bpf_sk_assign(skb, sk, 0);
				bpf_sk_release(sk);
				return ret == 0 ? CTL_PROXY_OK : CTL_PROXY_NO_SOCK;
			}
			bpf_sk_release(sk);
		}
	}
	if (!proxy_port)
		return CTL_PROXY_NO_SOCK;
	t.ipv4.dport = ctl_htons(proxy_port);
	if (p->proto == IPPROTO_TCP)
		sk = bpf_sk_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	else
		sk = bpf_sk_lookup_udp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return CTL_PROXY_NO_SOCK;
	ret = bpf_sk_assign(skb, sk, 0);
	bpf_sk_release(sk);
	return ret == 0 ? CTL_PROXY_OK : CTL_PROXY_NO_SOCK;
}

/* Hand a TCP or UDP packet to the proxy on proxy_port (host byte order) in this interface's namespace; proxy_port
 * 0: only to the proxy's own socket of this tuple (replies to the proxy's upstream connections). tc_ingress: the
 * program runs at tc ingress (from_container), else at tc egress (to_container). Returns TC_ACT_OK (the local stack
 * delivers it to the proxy), TC_ACT_REDIRECT (bounced to this interface's ingress, assigned there) or
 * CTL_PROXY_NO_SOCK (the caller drops: fail closed). */
static __always_inline int proxy_redirect(struct __sk_buff *skb, const struct pkt *p, __u16 proxy_port,
					  __u8 tc_ingress)
{
	__u8 mac[6];

	if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP)
		return CTL_PROXY_NO_SOCK;
	if (tc_ingress) {
		if (proxy_to_socket(skb, p, proxy_port) != CTL_PROXY_OK)
			return CTL_PROXY_NO_SOCK;
		skb->mark = CTL_MARK_TO_PROXY;
		return TC_ACT_OK;
	}
	/* the packet was routed to this veth: its source MAC is the host side's own, make it the destination so
	 * that the stack takes it as addressed to us when it comes back in */
	if (bpf_skb_load_bytes(skb, 6, mac, 6) < 0 || bpf_skb_store_bytes(skb, 0, mac, 6, 0) < 0)
		return CTL_PROXY_NO_SOCK;
	skb->mark = CTL_MARK_TO_PROXY | ((__u32)proxy_port << 16);
	return bpf_redirect(skb->ifindex, BPF_F_INGRESS);
}

/* At a device's tc ingress (from_netdev), a packet routed through the node: when the proxy holds the socket of its
 * tuple (a client on another node whose connection to a local endpoint the endpoint's ingress rules sent to the
 * proxy: its SYN was bounced at to_container and assigned there), hand it to that socket too. Otherwise the node's
 * early demux attaches that socket and ip_forward drops a forwarded packet carrying one: the handshake never
 * completes. Cilium does the same from bpf_host (ctx_redirect_to_proxy_hook). Returns 1 when handed over. */
static __always_inline int proxy_take_forwarded(struct __sk_buff *skb, const struct pkt *p)
{
	if (p->proto != IPPROTO_TCP || (p->tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN)
		return 0;
	if (proxy_to_socket(skb, p, 0) != CTL_PROXY_OK)
		return 0;
	skb->mark = CTL_MARK_TO_PROXY;
	return 1;
}

/* At tc ingress: a packet bounced by proxy_redirect at tc egress. Returns 1 and sets *port when it is one. */
static __always_inline int proxy_bounced(const struct __sk_buff *skb, __u16 *port)
{
	if ((skb->mark & CTL_MARK_HOST_MASK) != CTL_MARK_TO_PROXY)
		return 0;
	*port = skb->mark >> 16;
	return 1;
}

#endif
