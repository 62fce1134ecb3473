"""DNS flows: what the DNS proxy saw, as Hubble's L7 DNS flows (flow.proto Layer7/DNS), built the way Hubble's
seven parser builds them from Cilium's DNS access log (pkg/hubble/parser/seven/parser.go, dns.go): type L7,
event type 129 (access log), l7.type REQUEST or RESPONSE, observation source "proxy"; a request names the client
as source, a response the server (is_reply); both egress of the client. Denied queries are a DROPPED request
(Cilium logs no response for them: the client gets REFUSED from the proxy). The agent keeps the event and builds
its flow only when a client reads it (flows.store, KIND_L7).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from ciliumctl.flows.convert import _fill_endpoint
from ciliumctl.flows.meta import Snapshot
from ciliumctl.flows.names import MSG_ACCESS_LOG
from ciliumctl.flows.pb.flow import flow_pb2 as pb

OBSERVATION_SOURCE = "proxy"      # pkg/proxy/accesslog: DNSSourceProxy
# gopacket layers.DNSResponseCode.String(), what dnsSummary prints for a non-zero rcode
RCODE_TEXT = {0: "No Error", 1: "Format Error", 2: "Server Failure", 3: "Non-Existent Domain",
              4: "Not Implemented", 5: "Query Refused"}
RCODES = {"NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4, "REFUSED": 5}


@dataclass
class DNSEvent:
    """One query or response, in plain values (node/ fills it from the proxy's Query and Answer)."""

    response: bool
    client: tuple[str, int]
    server: tuple[str, int]
    proto: int                        # 6 or 17
    query: str                        # FQDN form
    qtypes: tuple[str, ...]
    allowed: bool = True
    rcode: int = 0
    ips: tuple[str, ...] = ()
    ttl: int = 0
    cnames: tuple[str, ...] = ()
    rrtypes: tuple[str, ...] = ()
    latency_ns: int = 0
    client_identity: int = 0
    server_identity: int = 0
    time_ns: int = field(default_factory=time.time_ns)

    flow_count = 1   # dns_flows makes one flow of it


def summary(e: DNSEvent) -> str:
    """seven/dns.go dnsSummary."""
    qtypes = ",".join(e.qtypes)
    if not e.response:
        return f"DNS Query {e.query} {qtypes}"
    if e.rcode:
        answer = f"RCode: {RCODE_TEXT.get(e.rcode, str(e.rcode))}"
    else:
        parts = []
        if e.ips:
            parts.append('"' + ",".join(e.ips) + '"')
        if e.cnames:
            parts.append('CNAMEs: "' + ",".join(e.cnames) + '"')
        answer = " ".join(parts)
    return f"DNS Answer {answer} TTL: {e.ttl} (Proxy {e.query} {qtypes})"


def dns_flows(e: DNSEvent, snap: Snapshot, node_name: str) -> list[pb.Flow]:
    """The event's flows, as the flow store builds them (flows.store.Chunk.flows)."""
    return [dns_flow(e, snap, node_name)]


def dns_flow(e: DNSEvent, snap: Snapshot, node_name: str) -> pb.Flow:
    f = pb.Flow()
    f.time.FromNanoseconds(e.time_ns)
    f.uuid = str(uuid.uuid4())
    f.node_name = node_name
    f.Type = pb.L7
    f.verdict = pb.FORWARDED if e.allowed else pb.DROPPED
    f.event_type.type = MSG_ACCESS_LOG
    f.traffic_direction = pb.EGRESS
    f.is_reply.value = e.response
    (src, sport, sid), (dst, dport, did) = ((e.client[0], e.client[1], e.client_identity),
                                            (e.server[0], e.server[1], e.server_identity))
    if e.response:
        (src, sport, sid), (dst, dport, did) = (dst, dport, did), (src, sport, sid)
    f.IP.source, f.IP.destination, f.IP.ipVersion = src, dst, pb.IPv4
    _fill_endpoint(f.source, snap.by_ip.get(src), sid, snap)
    _fill_endpoint(f.destination, snap.by_ip.get(dst), did, snap)
    f.source_names.extend(snap.names.get(src, ()))
    f.destination_names.extend(snap.names.get(dst, ()))
    l4 = f.l4.UDP if e.proto == 17 else f.l4.TCP
    l4.source_port, l4.destination_port = sport, dport
    l7 = f.l7
    l7.type = pb.RESPONSE if e.response else pb.REQUEST
    d = l7.dns
    d.query = e.query
    d.observation_source = OBSERVATION_SOURCE
    d.qtypes.extend(e.qtypes)
    if e.response:       # dns.go: a request carries only query, source and qtypes
        l7.latency_ns = e.latency_ns
        d.ips.extend(e.ips)
        d.ttl = e.ttl
        d.cnames.extend(e.cnames)
        d.rcode = e.rcode
        d.rrtypes.extend(e.rrtypes)
    f.Summary = summary(e)
    return f
