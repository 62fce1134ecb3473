/* Shared definitions of the datapath: map layouts and flags. Python mirrors: ciliumctl/datapath/maps.py. */
#ifndef CTL_COMMON_H
#define CTL_COMMON_H

#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/in.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/udp.h>
#include <uapi/linux/icmp.h>

#include "events.h"

#define CTL_IDENTITY_WORLD 2

/* per-endpoint flags (ep_info.flags, epcfg_val.flags) */
#define EP_F_ENFORCE_INGRESS 1
#define EP_F_ENFORCE_EGRESS  2
#define EP_F_AUDIT           4

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

#define ctl_htons(x) ((__u16)__builtin_bswap16((__u16)(x)))
#define ctl_ntohs(x) ((__u16)__builtin_bswap16((__u16)(x)))

/* A packet as the programs see it, parsed once. Ports in host byte order. */
struct pkt {
	__u32 saddr, daddr;    /* network byte order */
	__u16 sport, dport;    /* TCP/UDP ports; ICMP echo: id in both */
	__u16 policy_port;     /* port for policy lookup: dport, ICMP: type */
	__u16 ev_sport, ev_dport; /* what events carry: ports, ICMP: type/code */
	__u16 svc_id;          /* the service whose frontend this packet was sent to (lib/lb.h), else 0 */
	__u8 proto;
	__u8 tcp_flags;
	__u32 len;
	/* ICMP errors: the tuple of the packet they are about (as that packet was sent) */
	__u8 related;
	__u8 rel_proto;
	__u16 rel_sport, rel_dport;
	__u32 rel_saddr, rel_daddr;
};

/* endpoints: host-side ifindex -> endpoint, written at attach */
struct ep_info {
	__u16 ep_id;
	__u16 flags;      /* used until a policy revision names this endpoint */
	__u32 identity;
};

/* Everything written by apply lives under a slot (0/1); "state" names the active one, flipped last. */
struct dp_state {
	__u32 active_slot;
	__u32 src_crc;     /* crc32 of the C source these programs were built from (user space only) */
	__u64 revision;
	__u64 flip_ns;     /* CLOCK_MONOTONIC of the last switch (user space only) */
};

/* epcfg: (slot, endpoint id) -> identity + enforcement of that revision */
struct epcfg_key {
	__u32 slot;
	__u32 ep_id;
};
struct epcfg_val {
	__u32 identity;
	__u32 flags;
};

/* ipcache: LPM over (slot, IPv4 prefix). prefixlen = 32 + IP prefix length. */
struct ipcache_key {
	__u32 prefixlen;
	__u8 slot;
	__u8 pad[3];
	__u32 ip;          /* network byte order */
};
struct ipcache_val {
	__u32 identity;
};

/* policy: LPM over (slot, dir, ep, peer identity | proto | port prefix).
 * Fixed part 64 bits; proto adds 8 (72), then pad 8 and a port prefix (80 + port bits). */
#define POLICY_FIXED_BITS 64
#define POLICY_FULL_BITS  96
struct policy_key {
	__u32 prefixlen;
	__u8 slot;
	__u8 dir;          /* CTL_DIR_* */
	__u16 ep_id;
	__u32 identity;    /* 0 = any peer */
	__u8 proto;
	__u8 pad;
	__u16 dport;       /* network byte order */
};
struct policy_val {
	__u8 deny;
	__u8 match_type;   /* CTL_MATCH_* of this entry */
	__u16 proxy_port;  /* network byte order; != 0: L7 rules, redirect to this proxy (Cilium's policy_entry
			    * proxy_port, bpf/lib/policy.h; pkg/maps/policymap PolicyEntry.ProxyPortNetwork) */
	__u32 cookie;
};

/* monitor_config: how much the programs trace, Cilium's monitor aggregation (pkg/option/monitor.go levels; the
 * agent's --monitor-aggregation, --monitor-aggregation-interval, --monitor-aggregation-flags). Written by user
 * space (install), read per packet: changing the level needs no recompile. */
#define CTL_AGG_NONE    0   /* MonitorAggregationLevelNone: every packet at every observation point */
#define CTL_AGG_LOWEST  1   /* ...Lowest and Low: no trace on receive (from-endpoint), one per packet */
#define CTL_AGG_LOW     2
#define CTL_AGG_MEDIUM  3   /* ...Medium: per connection: first packet, report flags, closing, interval */
#define CTL_AGG_MAXIMUM 4   /* ...Max: as medium in bpf/lib/trace.h (>= TRACE_AGGREGATE_ACTIVE_CT) */
/* bpf/lib/trace.h enum: TRACE_AGGREGATE_RX = 1 hides receive traces, TRACE_AGGREGATE_ACTIVE_CT = 3 traces only
 * when conntrack says so (ct_update_timeout's `monitor`) */
#define CTL_TRACE_AGGREGATE_RX        1
#define CTL_TRACE_AGGREGATE_ACTIVE_CT 3
struct monitor_config {
	__u32 aggregation;            /* CTL_AGG_* */
	__u32 report_flags;           /* TCP flags whose first sight is traced (CT_REPORT_FLAGS; default syn|fin|rst) */
	__u64 report_interval_ns;     /* an active connection is traced again after this (CT_REPORT_INTERVAL, 5 s) */
};

/* drop_stats value, per CPU */
struct drop_count {
	__u64 packets;
	__u64 bytes;
};

/* fragments: the ports of a fragmented datagram, for its later fragments (which carry none) */
struct frag_key {
	__u32 saddr, daddr;
	__u16 id;
	__u8 proto;
	__u8 pad;
};
struct frag_ports {
	__u16 sport, dport;   /* host byte order */
};

/* conntrack: one entry per connection and endpoint interface, keyed as the first packet was seen. Keyed by the
 * host-side ifindex (known from the skb), so a packet of a tracked connection needs no other lookup. */
struct ct_key {
	__u32 saddr, daddr;
	__u16 sport, dport;
	__u8 proto;
	__u8 dir;          /* CTL_DIR_* of the connection from the endpoint's point of view */
	__u16 pad;
	__u32 ifindex;
};
struct ct_entry {
	__u64 last_seen;              /* coarse CLOCK_MONOTONIC */
	__u64 fwd_report, rev_report; /* coarse time of the last trace of that side; 0 = never traced */
	__u32 cookie;
	__u32 peer_identity;
	__u32 own_identity;
	__u16 ep_id;
	__u8 match_type;
	__u8 verdict;                 /* FORWARDED, AUDIT, or DROPPED since a revision denied it */
	__u32 fwd_pkts, rev_pkts;     /* since the last trace of that side */
	__u32 fwd_bytes, rev_bytes;
	__u8 fwd_flags, rev_flags;    /* TCP flags seen per side */
	__u8 fwd_reported, rev_reported; /* of those, the report flags (monitor_config) already traced */
	__u32 policy_rev;             /* low 32 bits of the revision the verdict was decided with */
	/* a connection to a service, translated on its way out of this endpoint: replies get the frontend back as
	 * their source (Cilium's rev_nat_index, here the frontend itself); 0 = not translated */
	__u32 nat_addr;               /* network byte order */
	__u16 nat_port;               /* host byte order */
	__u16 proxy_port;             /* host byte order; != 0: forward packets go to this proxy (lib/proxy.h) */
	__u8 proxy_upstream;          /* the proxy's own upstream connection: replies go to its socket */
	__u8 nodeport_snat;           /* a NodePort connection to a backend on another node, SNATed (lib/nodeport.h) */
	__u8 proxy_pad[2];
};

/* Services (lib/lb.h), after Cilium's lb4_key / lb4_service / lb4_backend (bpf/lib/lb.h) and its affinity map.
 * lb_services: (slot, proto, backend slot, frontend) -> service. Backend slot 0 is the service itself (count of
 * backends that take new connections), 1..count name one backend each. Written per revision slot like policy. */
struct lb_svc_key {
	__u8 slot;
	__u8 proto;
	__u16 backend_slot;
	__u32 vip;         /* network byte order */
	__u16 dport;       /* host byte order */
	__u16 pad;
};
struct lb_svc_val {
	__u32 backend_id;  /* backend slots */
	__u32 svc_id;      /* Cilium's rev_nat_index: the service's id */
	__u16 count;       /* slot 0: backends that take new connections */
	__u8 flags;        /* LB_F_* */
	__u8 pad;
	__u32 affinity_timeout;   /* seconds; sessionAffinity ClientIP */
};
#define LB_F_NODEPORT 1
#define LB_F_AFFINITY 2
#define LB_F_SKIP_FROM_BACKEND 4   /* a local redirect with skipRedirectFromBackend (lb_skip_from_backend) */
/* Kinds of lb_services entries beside a service's own, in the high bits of the key's proto (a frontend's protocol
 * is TCP or UDP): LB_KIND_ORIGINAL, the service a local redirect replaced, laid out as a service; LB_KIND_SKIP,
 * one backend of the redirect whose own traffic skips it, its address in backend_slot (low half) and pad. */
#define LB_KIND_ORIGINAL 0x80
#define LB_KIND_SKIP 0x40

/* lb_backends: backend id -> address; not per slot (ids are never reused for another address while referenced) */
struct lb_backend {
	__u32 addr;        /* network byte order */
	__u16 port;        /* host byte order */
	__u8 proto;
	__u8 state;        /* LB_BACKEND_* */
};
#define LB_BACKEND_ACTIVE      0
#define LB_BACKEND_TERMINATING 1   /* keeps its connections, takes no new ones */

/* lb_conns: a connection to a service as its client sent it -> the backend it got (Cilium's CT_SERVICE entry) */
struct lb_conn_key {
	__u32 saddr, vip;
	__u16 sport, dport;
	__u8 proto;
	__u8 pad[3];
	__u32 ifindex;
};
struct lb_conn {
	__u64 last_seen;
	__u32 backend_id;
	__u32 svc_id;
};

/* lb_snat: NodePort connections to a backend on another node, SNATed to the node's address (lib/nodeport.h; Cilium's
 * SNAT map, cilium_snat_v4_external in bpf/lib/nat.h). Two entries per connection, ports in host byte order:
 * dir 0, the client's tuple as translated (client -> backend) -> the node's address and port it leaves with;
 * dir 1, the backend's reply tuple (backend -> node address:port) -> the client, its frontend and service, and the
 * device the client came in on (the connection's conntrack entry is keyed on it). */
struct lb_snat_key {
	__u32 saddr, daddr;
	__u16 sport, dport;
	__u8 proto;
	__u8 dir;
	__u16 pad;
};
struct lb_snat_val {
	__u32 addr;        /* network byte order */
	__u16 port;
	__u16 svc_id;
	__u32 frontend;    /* dir 1: the NodePort frontend the client asked for */
	__u16 frontend_port;
	__u16 pad;
	__u32 ifindex;     /* dir 1: the device the client's packets arrive on */
	__u32 pad2;
};

/* lb_affinity: (client, service) -> the backend of its last connection (Cilium's lb_affinity_match map) */
struct lb_affinity_key {
	__u32 client;
	__u32 svc_id;
};
struct lb_affinity_val {
	__u64 last_used;   /* coarse CLOCK_MONOTONIC */
	__u32 backend_id;
	__u32 pad;
};

#endif
