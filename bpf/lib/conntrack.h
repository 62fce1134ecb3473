/* Connection tracking: the entry carries a connection in both directions with the verdict of its revision (forward
 * packets are decided again when the revision changes), and aggregates trace events (first packet per side, new
 * TCP flags). */
#ifndef CTL_CONNTRACK_H
#define CTL_CONNTRACK_H

#include "maps.h"

#define NSEC 1000000000ULL
#define CT_LIFETIME_TCP      (21600 * NSEC)
#define CT_LIFETIME_SYN      (60 * NSEC)
#define CT_LIFETIME_CLOSING  (10 * NSEC)
#define CT_LIFETIME_NONTCP   (60 * NSEC)

static __always_inline int ct_expired(const struct ct_entry *ct, __u8 proto, __u64 now)
{
	__u64 age = now - ct->last_seen;
	if (proto != IPPROTO_TCP)
		return age > CT_LIFETIME_NONTCP;
	if ((ct->fwd_flags | ct->rev_flags) & (TCP_FIN | TCP_RST))
		return age > CT_LIFETIME_CLOSING;
	if (!(ct->rev_flags & TCP_ACK))
		return age > CT_LIFETIME_SYN;
	return age > CT_LIFETIME_TCP;
}

/* A new SYN on a tuple whose previous connection closed starts a new connection (and a new policy decision). */
static __always_inline int ct_reopened(const struct ct_entry *ct, const struct pkt *p)
{
	return p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN &&
	       ((ct->fwd_flags | ct->rev_flags) & (TCP_FIN | TCP_RST));
}

static __always_inline void ct_fill_key(struct ct_key *k, const struct pkt *p, __u8 dir, __u32 ifindex, int reverse)
{
	k->proto = p->proto;
	k->dir = dir;
	k->ifindex = ifindex;
	if (!reverse) {
		k->saddr = p->saddr;
		k->daddr = p->daddr;
		k->sport = p->sport;
		k->dport = p->dport;
	} else {
		k->saddr = p->daddr;
		k->daddr = p->saddr;
		k->sport = p->dport;
		k->dport = p->sport;
	}
}

#endif
