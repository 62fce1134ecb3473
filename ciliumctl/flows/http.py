"""HTTP flows: what the HTTP proxy (HAProxy, node/http_proxy/haproxy.py) logged, as Hubble's L7 HTTP flows, built
the way Hubble's seven parser builds them from Cilium's HTTP access log (pkg/hubble/parser/seven/parser.go,
http.go): type L7, event type 129 (access log), l7.type REQUEST then RESPONSE (with the code and the latency),
l7.http method, url (scheme, Host header, path), protocol; a request names the client as source, a response the
server (is_reply). A denied request is one DROPPED request flow (the 403 comes from the proxy, not the server).
The agent keeps the event and builds its flows only when a client reads them (flows.store, KIND_L7)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from ciliumctl.flows.convert import _fill_endpoint
from ciliumctl.flows.meta import Snapshot
from ciliumctl.flows.names import MSG_ACCESS_LOG
from ciliumctl.flows.pb.flow import flow_pb2 as pb


@dataclass(slots=True)
class HTTPEvent:
    """One request and its answer as the proxy logged them (node/ parses HAProxy's log line into it)."""

    time_ns: int                      # when the request was accepted
    client: tuple[str, int]
    server: tuple[str, int]           # the original destination
    method: str
    path: str                         # as sent: path and query
    protocol: str                     # HTTP/1.1
    host: str
    code: int                         # the status sent to the client (403 when denied)
    latency_ns: int                   # request sent -> response headers (0 when denied)
    allowed: bool
    ingress: bool                     # redirected for the server's ingress rules (else the client's egress)
    client_identity: int = 0
    server_identity: int = 0

    @property
    def url(self) -> str:
        return f"http://{self.host or self.server[0]}{self.path}"

    @property
    def flow_count(self) -> int:
        """How many flows http_flows makes of it: the request, and the response when the server answered."""
        return 2 if self.allowed else 1


def summary(e: HTTPEvent, response: bool) -> str:
    """seven/http.go httpSummary."""
    request = f"{e.method} {e.url}"
    if not response:
        return f"{e.protocol} {request}"
    return f"{e.protocol} {e.code} {e.latency_ns // 1_000_000}ms ({request})"


def http_flows(e: HTTPEvent, snap: Snapshot, node_name: str) -> list[pb.Flow]:
    """The request flow, and the response flow when the request reached the server."""
    return [_flow(e, snap, node_name, False)] + ([_flow(e, snap, node_name, True)] if e.allowed else [])


_TEMPLATES: dict[tuple, pb.Flow] = {}
_TEMPLATES_MAX = 4096


def _template(e: HTTPEvent, snap: Snapshot, node_name: str, response: bool) -> pb.Flow:
    """What flows between the same peers in the same way share (endpoints, addresses, verdict): made once per
    snapshot, copied per request, as flows.convert does for the datapath's flows (a request costs a copy, not
    the endpoints' labels again). Keyed by the snapshot itself (compared by identity), not its id(): flows are
    built later than their events arrive, and a freed snapshot's id can be a newer one's."""
    key = (snap, node_name, e.client, e.client_identity, e.server[0], e.server_identity, e.allowed, e.ingress,
           response)
    f = _TEMPLATES.get(key)
    if f is not None and f.node_name == node_name:
        return f
    if len(_TEMPLATES) >= _TEMPLATES_MAX:
        _TEMPLATES.clear()
    f = pb.Flow()
    f.node_name = node_name
    f.Type = pb.L7
    f.verdict = pb.FORWARDED if e.allowed else pb.DROPPED
    f.event_type.type = MSG_ACCESS_LOG
    f.traffic_direction = pb.INGRESS if e.ingress else pb.EGRESS
    f.is_reply.value = response
    (src, sid), (dst, did) = (e.client[0], e.client_identity), (e.server[0], e.server_identity)
    if response:
        (src, sid), (dst, did) = (dst, did), (src, sid)
    f.IP.source, f.IP.destination, f.IP.ipVersion = src, dst, pb.IPv4
    _fill_endpoint(f.source, snap.by_ip.get(src), sid, snap)
    _fill_endpoint(f.destination, snap.by_ip.get(dst), did, snap)
    f.l7.type = pb.RESPONSE if response else pb.REQUEST
    _TEMPLATES[key] = f
    return f


def _flow(e: HTTPEvent, snap: Snapshot, node_name: str, response: bool) -> pb.Flow:
    f = pb.Flow()
    f.CopyFrom(_template(e, snap, node_name, response))
    f.time.FromNanoseconds(e.time_ns + (e.latency_ns if response else 0))
    f.uuid = str(uuid.uuid4())
    sport, dport = e.client[1], e.server[1]
    f.l4.TCP.source_port, f.l4.TCP.destination_port = (dport, sport) if response else (sport, dport)
    l7 = f.l7
    h = l7.http
    h.method, h.url, h.protocol = e.method, e.url, e.protocol
    if response:          # http.go: the code and latency belong to the response
        h.code = e.code
        l7.latency_ns = e.latency_ns
    f.Summary = summary(e, response)
    return f
