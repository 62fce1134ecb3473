/* Emitting events to the ring buffer; every failed reserve is counted in events_lost. */
#ifndef CTL_NOTIFY_H
#define CTL_NOTIFY_H

#include "maps.h"

static __always_inline void count_lost(void)
{
	__u32 zero = 0;
	__u64 *lost = events_lost.lookup(&zero);
	if (lost)
		*lost += 1;   /* per-CPU: no atomics needed */
}

static __always_inline void count_drop(__u8 reason, __u8 dir, __u32 len)
{
	__u32 idx = ((__u32)reason << 2) | (dir & 3);
	struct drop_count *c = drop_stats.lookup(&idx);
	if (c) {
		c->packets += 1;
		c->bytes += len;
	}
}

/* Whether to send a trace at `obs`, as bpf/lib/trace.h's emit_trace_notify() decides with MONITOR_AGGREGATION, here
 * read from the monitor_config map: from TRACE_AGGREGATE_RX on, nothing at receive points (from-endpoint); from
 * TRACE_AGGREGATE_ACTIVE_CT on, only what conntrack marked worth it (`monitor`). Drops and policy verdicts are
 * not traces: they are always sent. No config (never written) means Cilium's default, medium. */
static __always_inline int trace_wanted(const struct monitor_config *cfg, __u8 obs, int monitor)
{
	__u32 level = cfg ? cfg->aggregation : CTL_AGG_MEDIUM;

	if (level >= CTL_TRACE_AGGREGATE_RX && obs == CTL_OBS_FROM_ENDPOINT)
		return 0;
	if (level >= CTL_TRACE_AGGREGATE_ACTIVE_CT && !monitor)
		return 0;
	return 1;
}

/* type/subtype/verdict + the rest from the packet; src/dst identity in packet order */
static __always_inline void emit(struct __sk_buff *skb, const struct pkt *p, __u8 type, __u8 subtype,
				 __u8 verdict, __u8 dir, __u16 ep_id, __u32 src_id, __u32 dst_id,
				 __u32 cookie, __u8 match_type, __u8 is_reply, __u8 flags,
				 __u32 len, __u32 packets)
{
	struct ctl_event *e = events.ringbuf_reserve(sizeof(struct ctl_event));
	if (!e) {
		count_lost();
		return;
	}
	e->ts_ns = bpf_ktime_get_ns();
	e->type = type;
	e->subtype = subtype;
	e->verdict = verdict;
	e->direction = dir;
	e->ep_id = ep_id;
	e->proto = p->proto;
	e->tcp_flags = flags;
	e->ifindex = skb->ifindex;
	e->src_identity = src_id;
	e->dst_identity = dst_id;
	e->saddr = p->saddr;
	e->daddr = p->daddr;
	e->sport = p->ev_sport;
	e->dport = p->ev_dport;
	e->len = len;
	e->rule_cookie = cookie;
	e->match_type = match_type;
	e->is_reply = is_reply;
	e->svc_id = p->svc_id;
	e->packets = packets;
	events.ringbuf_submit(e, 0);
}

#endif
