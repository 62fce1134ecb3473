"""The datapath's event record (bpf/lib/events.h) as seen from Python. No BCC needed to decode."""

import socket
import struct
from dataclasses import dataclass

# struct ctl_event, little endian, no padding beyond what the C layout has (56 bytes).
EVENT_FORMAT = struct.Struct("<QBBBBHBBIII4s4sHHIIBBHI")
EVENT_SIZE = EVENT_FORMAT.size

EVENT_DROP = 1
EVENT_TRACE = 4
EVENT_POLICY_VERDICT = 9

VERDICT_FORWARDED = 1
VERDICT_DROPPED = 2
VERDICT_AUDIT = 4

DIR_INGRESS = 1
DIR_EGRESS = 2

DROP_POLICY = 133
DROP_POLICY_DENY = 181
DROP_UNKNOWN_L3 = 139   # IPv6 in an enforced direction (the datapath enforces IPv4 only)

MATCH_NONE, MATCH_L3_ONLY, MATCH_L3_L4, MATCH_L4_ONLY, MATCH_ALL = range(5)

OBS_FROM_ENDPOINT = 5
OBS_TO_ENDPOINT = 101


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


def decode(buf, offset: int = 0) -> Event:
    """One event from raw bytes (a ring buffer record)."""
    (ts, typ, sub, verdict, direction, ep_id, proto, flags, ifindex, sid, did, saddr, daddr,
     sport, dport, length, cookie, match, reply, _pad, packets) = EVENT_FORMAT.unpack_from(buf, offset)
    return Event(ts, typ, sub, verdict, direction, ep_id, proto, flags, ifindex, sid, did,
                 socket.inet_ntoa(saddr), socket.inet_ntoa(daddr), sport, dport, length, cookie,
                 match, bool(reply), packets)
