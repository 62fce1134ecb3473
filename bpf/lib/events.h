/* Events from the datapath to user space, one ring buffer for all of them.
 * Layout is mirrored by ciliumctl/datapath/events.py (EVENT_FORMAT); change both together.
 * Numbers are Cilium's (cited per table), so events map onto Hubble's flow fields directly. */
#ifndef CTL_EVENTS_H
#define CTL_EVENTS_H

/* Cilium's monitor message types: CILIUM_NOTIFY_* in bpf/lib/common.h, MessageType* in pkg/monitor/api/types.go
 * (drop 1, debug 2, capture 3, trace 4, policy verdict 5, trace-sock 7) */
#define CTL_EVENT_DROP            1   /* subtype = drop reason (133, 181, ...) */
#define CTL_EVENT_TRACE           4   /* subtype = observation point */
#define CTL_EVENT_POLICY_VERDICT  5   /* first packet of a connection; subtype = drop reason when denied (Cilium
                                       * carries it as the negative verdict), else 0 */

/* flow.proto Verdict (api/v1/flow/flow.proto) */
#define CTL_VERDICT_FORWARDED 1
#define CTL_VERDICT_DROPPED   2
#define CTL_VERDICT_AUDIT     4

/* flow.proto TrafficDirection, from the endpoint's point of view; also Cilium's POLICY_INGRESS/POLICY_EGRESS
 * (bpf/lib/policy.h) */
#define CTL_DIR_INGRESS 1
#define CTL_DIR_EGRESS  2

/* Cilium drop reasons: DROP_* in bpf/lib/common.h (negated there), names in pkg/monitor/api/drop.go */
#define CTL_DROP_POLICY       133  /* DROP_POLICY: "Policy denied" */
#define CTL_DROP_UNKNOWN_L3   139  /* DROP_UNKNOWN_L3: "Unsupported L3 protocol" (IPv6 in an enforced direction) */
#define CTL_DROP_NO_SERVICE   158  /* DROP_NO_SERVICE: "Service backend not found" (flow.proto SERVICE_BACKEND_NOT_FOUND) */
#define CTL_DROP_NAT_NO_MAPPING 167 /* DROP_NAT_NO_MAPPING: "No mapping for NAT masquerade": no NodePort SNAT port free */
#define CTL_DROP_NO_FIB       169  /* DROP_NO_FIB: "FIB lookup failed": no route on to a remote backend or the client */
#define CTL_DROP_SOCKET_LOOKUP 178  /* DROP_SK_LOOKUP: "Socket lookup failed" (flow.proto SOCKET_LOOKUP_FAILED): no proxy */
#define CTL_DROP_POLICY_DENY  181  /* DROP_POLICY_DENY: "Policy denied by denylist" */

/* Cilium policy match types: POLICY_MATCH_* in bpf/lib/policy.h, PolicyMatch* in pkg/monitor/api/types.go */
#define CTL_MATCH_NONE     0
#define CTL_MATCH_L3_ONLY  1
#define CTL_MATCH_L3_L4    2
#define CTL_MATCH_L4_ONLY  3
#define CTL_MATCH_ALL      4
#define CTL_MATCH_L3_PROTO 5
#define CTL_MATCH_PROTO_ONLY 6

/* Cilium trace observation points: enum trace_point in bpf/lib/trace.h, Trace* in pkg/monitor/api/types.go.
 * to-endpoint is 0 (TRACE_TO_LXC) here; flow.proto names it TO_ENDPOINT = 101 in trace_observation_point. */
#define CTL_OBS_TO_ENDPOINT   0
#define CTL_OBS_FROM_ENDPOINT 5

struct ctl_event {
	__u64 ts_ns;          /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) */
	__u8  type;           /* CTL_EVENT_* */
	__u8  subtype;        /* drop reason (drops, denied verdicts) or observation point (traces) */
	__u8  verdict;        /* CTL_VERDICT_* */
	__u8  direction;      /* CTL_DIR_* */
	__u16 ep_id;          /* endpoint whose policy applied */
	__u8  proto;          /* IPPROTO_* */
	__u8  tcp_flags;      /* TCP flags seen (traces: OR of the flags since the last trace) */
	__u32 ifindex;        /* host-side interface the program ran on */
	__u32 src_identity;
	__u32 dst_identity;
	__u32 saddr;          /* network byte order */
	__u32 daddr;          /* network byte order */
	__u16 sport;          /* host byte order; ICMP: type */
	__u16 dport;          /* host byte order; ICMP: code */
	__u32 len;            /* bytes of the packet (traces: bytes since the last trace) */
	__u32 rule_cookie;    /* policy entry that decided; 0 = none (default deny / no policy) */
	__u8  match_type;     /* CTL_MATCH_* */
	__u8  is_reply;       /* 1 when the packet is a reply of a tracked connection */
	__u16 svc_id;         /* a packet to a service frontend: the service (lb_services id), else 0 */
	__u32 packets;        /* traces: packets since the last trace */
};

#endif
