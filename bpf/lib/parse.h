/* Parsing a packet once for every program: IPv4 + L4 ports, ICMP type/code and the tuple an ICMP error quotes,
 * the ports of later fragments (`fragments`). Shared by bpf_lxc.c, bpf_host.c and lib/nodeport.h. */
#ifndef CTL_PARSE_H
#define CTL_PARSE_H

#include "maps.h"

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

#endif
