/* Connection tracking: the entry carries a connection in both directions with the verdict of its revision (forward
 * packets are decided again when the revision changes), and decides which packets are worth a trace (ct_monitor:
 * first packet per side, new report flags, closing, the report interval). */
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

/* Whether a packet of a tracked connection is worth a trace, decided as Cilium's __ct_update_timeout() decides its
 * `monitor` (bpf/lib/conntrack.h): a report flag (CT_REPORT_FLAGS) not traced before on this side, the report
 * interval (CT_REPORT_INTERVAL) passed since this side's last trace (a side never traced counts as long ago), or a
 * closing packet (FIN or RST: __ct_lookup's ACTION_CLOSE always reports). Records the report when there is one. */
static __always_inline int ct_monitor(__u64 *last_report, __u8 *reported, __u8 flags,
				      const struct monitor_config *cfg, __u64 now)
{
	__u8 mask = cfg ? cfg->report_flags : (TCP_SYN | TCP_FIN | TCP_RST);
	__u64 interval = cfg ? cfg->report_interval_ns : 5 * NSEC;
	__u8 seen = (flags & mask) | *reported;

	if ((flags & (TCP_FIN | TCP_RST)) || seen != *reported || !*last_report || *last_report + interval < now) {
		*reported = seen;
		*last_report = now;
		return 1;
	}
	return 0;
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
