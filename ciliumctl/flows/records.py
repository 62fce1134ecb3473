"""Ring buffer records as the agent keeps them: the 8-byte BPF ring buffer header followed by the datapath's
struct ctl_event (ciliumctl/datapath/events.py). With 56-byte events every record is exactly 64 bytes, so a run
of records is one regular array that struct.iter_unpack decodes in C, and the flow store can keep the raw bytes
and decode a record only when a client asks for it."""

from __future__ import annotations

import struct

from ciliumctl.datapath.events import EVENT_FORMAT, EVENT_SIZE
from ciliumctl.datapath.ringbuf import HDR_SIZE, RECORD_SIZE

# header (len, page offset) + the event fields, in EVENT_FORMAT order
RECORD = struct.Struct("<II" + EVENT_FORMAT.format.lstrip("<=@!>") + "x" * (RECORD_SIZE - HDR_SIZE - EVENT_SIZE))
assert RECORD.size == RECORD_SIZE

# indices into a RECORD tuple
(R_LEN, R_PGOFF, R_TS, R_TYPE, R_SUBTYPE, R_VERDICT, R_DIR, R_EP, R_PROTO, R_FLAGS, R_IFINDEX, R_SID, R_DID,
 R_SADDR, R_DADDR, R_SPORT, R_DPORT, R_BYTES, R_COOKIE, R_MATCH, R_REPLY, R_SVC, R_PACKETS) = range(23)

# Only what the metrics need: header len, type, subtype, verdict, direction, proto, match type, service id.
# Decoding this narrow view of a whole batch is a single C call; counting its tuples is another.
_off_type = HDR_SIZE + 8
_off_proto = HDR_SIZE + 14
_off_match = HDR_SIZE + 48
_off_svc = HDR_SIZE + 50
METRIC_VIEW = struct.Struct(
    f"<I{_off_type - 4}xBBBB{_off_proto - _off_type - 4}xB{_off_match - _off_proto - 1}xB"
    f"{_off_svc - _off_match - 1}xH{RECORD_SIZE - _off_svc - 2}x")
assert METRIC_VIEW.size == RECORD_SIZE


def pack_record(ts_ns=0, type=4, subtype=0, verdict=1, direction=2, ep_id=0, proto=6, tcp_flags=0, ifindex=0,
                src_identity=0, dst_identity=0, saddr=b"\0\0\0\0", daddr=b"\0\0\0\0", sport=0, dport=0, length=0,
                rule_cookie=0, match_type=0, is_reply=0, packets=1, svc_id=0) -> bytes:
    """One record as the kernel lays it out (tests and benchmarks build synthetic ring contents with this)."""
    return RECORD.pack(EVENT_SIZE, 0, ts_ns, type, subtype, verdict, direction, ep_id, proto, tcp_flags, ifindex,
                       src_identity, dst_identity, saddr, daddr, sport, dport, length, rule_cookie, match_type,
                       is_reply, svc_id, packets)
