"""The datapath's event record (bpf/lib/events.h) as seen from Python. No BCC needed to decode."""

import socket
import struct
from dataclasses import dataclass

# struct ctl_event, little endian, no padding beyond what the C layout has (56 bytes).
EVENT_FORMAT = struct.Struct("<QBBBBHBBIII4s4sHHIIBBHI")
EVENT_SIZE = EVENT_FORMAT.size

# Cilium's monitor message types (bpf/lib/common.h CILIUM_NOTIFY_*, pkg/monitor/api/types.go MessageType*)
EVENT_DROP = 1
EVENT_TRACE = 4
EVENT_POLICY_VERDICT = 5   # subtype: the drop reason when denied, else 0

# flow.proto Verdict (api/v1/flow/flow.proto)
VERDICT_FORWARDED = 1
VERDICT_DROPPED = 2
VERDICT_AUDIT = 4

# flow.proto TrafficDirection; Cilium's POLICY_INGRESS / POLICY_EGRESS (bpf/lib/policy.h)
DIR_INGRESS = 1
DIR_EGRESS = 2

# Cilium drop reasons (bpf/lib/common.h DROP_*, pkg/monitor/api/drop.go)
DROP_POLICY = 133
DROP_UNKNOWN_L3 = 139   # IPv6 in an enforced direction (the datapath enforces IPv4 only)
DROP_NO_SERVICE = 158  # a service frontend without a backend for a new connection
DROP_NAT_NO_MAPPING = 167   # no NodePort SNAT port free (bpf/lib/nodeport.h)
DROP_NO_FIB = 169   # no route on for a NodePort connection to another node or its reply
DROP_SOCKET_LOOKUP = 178  # a connection for the proxy while no proxy socket listens (bpf/lib/proxy.h)
DROP_POLICY_DENY = 181

# Cilium policy match types (bpf/lib/policy.h POLICY_MATCH_*, pkg/monitor/api/types.go PolicyMatch*)
MATCH_NONE, MATCH_L3_ONLY, MATCH_L3_L4, MATCH_L4_ONLY, MATCH_ALL, MATCH_L3_PROTO, MATCH_PROTO_ONLY = range(7)

# Cilium trace observation points (bpf/lib/trace.h enum trace_point, pkg/monitor/api/types.go Trace*)
OBS_TO_ENDPOINT = 0     # TRACE_TO_LXC; flow.proto's trace_observation_point calls it TO_ENDPOINT = 101
OBS_FROM_ENDPOINT = 5   # TRACE_FROM_LXC


@dataclass(frozen=True, slots=True)
class Event:
    ts_ns: int
    type: int
    subtype: int
    verdict: int
    direction: int
    ep_id: int
    proto: int
    tcp_flags: int
    ifindex: int
    src_identity: int
    dst_identity: int
    saddr: str
    daddr: str
    sport: int
    dport: int
    len: int
    rule_cookie: int
    match_type: int
    is_reply: bool
    packets: int
    svc_id: int = 0       # the service whose frontend the packet was sent to (lb_translate), else 0


def decode(buf, offset: int = 0) -> Event:
    """One event from raw bytes (a ring buffer record)."""
    (ts, typ, sub, verdict, direction, ep_id, proto, flags, ifindex, sid, did, saddr, daddr,
     sport, dport, length, cookie, match, reply, svc_id, packets) = EVENT_FORMAT.unpack_from(buf, offset)
    return Event(ts, typ, sub, verdict, direction, ep_id, proto, flags, ifindex, sid, did,
                 socket.inet_ntoa(saddr), socket.inet_ntoa(daddr), sport, dport, length, cookie,
                 match, bool(reply), packets, svc_id)
