"""Datapath events -> Hubble flows (flow.Flow), enriched with endpoint metadata and policy names."""

from __future__ import annotations

import socket
from typing import Protocol

from ciliumctl.datapath import events as ev
from ciliumctl.flows import names
from ciliumctl.flows.meta import EndpointInfo, Snapshot
from ciliumctl.flows.pb.flow import flow_pb2 as pb
from ciliumctl.flows.records import (
    R_COOKIE,
    R_DADDR,
    R_DID,
    R_DIR,
    R_DPORT,
    R_EP,
    R_FLAGS,
    R_IFINDEX,
    R_MATCH,
    R_PROTO,
    R_REPLY,
    R_SADDR,
    R_SID,
    R_SPORT,
    R_SUBTYPE,
    R_SVC,
    R_TS,
    R_TYPE,
    R_VERDICT,
)

_inet_ntoa = socket.inet_ntoa
_NO_ADDR = b"\0\0\0\0"
_TCP_FLAG_FIELDS = [("FIN", 0x01), ("SYN", 0x02), ("RST", 0x04), ("PSH", 0x08), ("ACK", 0x10), ("URG", 0x20),
                    ("ECE", 0x40), ("CWR", 0x80)]
_flags_summary_cache: dict[int, str] = {}
_DROP_REASON_DESCS = frozenset(pb.DropReason.values())


def tcp_flags_summary(bits: int) -> str:
    s = _flags_summary_cache.get(bits)
    if s is None:
        s = "TCP Flags: " + ", ".join(n for n, b in names.TCP_FLAG_BITS if bits & b)
        _flags_summary_cache[bits] = s
    return s


def uuid_prefix(boot_id: int) -> str:
    """The first three groups of every flow uuid of one agent run (its random boot id)."""
    h = f"{boot_id & (2**64 - 1):016x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:]}-"


def uuid_with(prefix: str, seq: int) -> str:
    s = f"{seq & (2**64 - 1):016x}"
    return f"{prefix}{s[:4]}-{s[4:]}"


def flow_uuid(boot_id: int, seq: int) -> str:
    """Stable per flow for the agent's lifetime: a random boot id and the flow's sequence number."""
    return uuid_with(uuid_prefix(boot_id), seq)


def _fill_endpoint(out: pb.Endpoint, info: EndpointInfo | None, identity: int, snap: Snapshot) -> None:
    out.identity = identity
    if info is not None:
        out.ID = info.id
        out.namespace = info.namespace
        out.pod_name = info.name
        out.labels.extend(snap.identity_labels.get(identity) or info.labels)
        for name, kind in info.workloads:
            out.workloads.add(name=name, kind=kind)
    else:
        out.labels.extend(snap.labels_of(identity))


def _policies(target, refs) -> None:
    for r in refs:
        target.add(name=r.name, namespace=r.namespace, labels=r.labels, revision=r.revision, kind=r.kind)


_TEMPLATE_CACHE_MAX = 20_000


def _template(rec: tuple, snap: Snapshot, node_name: str, side: int) -> pb.Flow:
    """The part of a flow that depends only on who talks to whom under which rule: addresses, endpoints, node,
    policies. Flows between the same peers share it (see record_to_flow's cache)."""
    f = pb.Flow()
    f.node_name = node_name
    f.Type = pb.L3_L4
    cookie, direction = rec[R_COOKIE], rec[R_DIR]
    if rec[R_SADDR] == _NO_ADDR and rec[R_DADDR] == _NO_ADDR:
        # not IPv4 (the record carries IPv4 addresses only, e.g. an IPv6 packet dropped as unsupported L3):
        # no IP section; the endpoint whose policy applied is the source (egress) or destination (ingress)
        own = snap.by_id.get(rec[R_EP])
        _fill_endpoint(f.source, own if direction == ev.DIR_EGRESS else None, rec[R_SID], snap)
        _fill_endpoint(f.destination, own if direction == ev.DIR_INGRESS else None, rec[R_DID], snap)
    else:
        saddr, daddr = _inet_ntoa(rec[R_SADDR]), _inet_ntoa(rec[R_DADDR])
        ip = f.IP
        ip.source = saddr
        ip.destination = daddr
        ip.ipVersion = pb.IPv4
        by_ip = snap.by_ip
        _fill_endpoint(f.source, by_ip.get(saddr), rec[R_SID], snap)
        _fill_endpoint(f.destination, by_ip.get(daddr), rec[R_DID], snap)
        if snap.names:         # addresses learned from DNS answers (Hubble: source_names / destination_names)
            f.source_names.extend(snap.names.get(saddr, ()))
            f.destination_names.extend(snap.names.get(daddr, ()))
    if side and cookie:
        refs = snap.cookies.get(cookie)
        if refs:
            if side == _DENIED:
                _policies(f.ingress_denied_by if direction == ev.DIR_INGRESS else f.egress_denied_by, refs)
            else:
                _policies(f.ingress_allowed_by if direction == ev.DIR_INGRESS else f.egress_allowed_by, refs)
    return f


_ALLOWED, _DENIED = 1, 2


def _policy_side(rec: tuple) -> int:
    """Which *_by list names the rule, as Cilium's pkg/policy/correlation does it: policy-verdict flows only,
    allowed ones (FORWARDED) and the ones a deny rule dropped (POLICY_DENY); none for AUDIT or default deny."""
    if rec[R_TYPE] != ev.EVENT_POLICY_VERDICT:
        return 0
    if rec[R_VERDICT] == pb.FORWARDED:
        return _ALLOWED
    if rec[R_VERDICT] == pb.DROPPED and rec[R_SUBTYPE] == ev.DROP_POLICY_DENY:
        return _DENIED
    return 0


_PORTED = (6, 17, 132)   # protocols whose ports Cilium's parser decodes (TCP, UDP, SCTP)
Services = tuple[tuple[str, str] | None, tuple[str, str] | None]


def services_of(saddr: bytes, sport: int, daddr: bytes, dport: int, proto: int, svc_id: int,
                snap: Snapshot) -> Services:
    """(source service, destination service) as (namespace, name), or None. As Hubble: a flow's address and port
    that are a service frontend name it (pkg/hubble/parser/threefour/parser.go: GetServiceByAddr(srcIP, srcPort),
    GetServiceByAddr(dstIP, dstPort)); replies after the reverse translation carry the frontend as source. Our
    events are sent after the translation, when the packet names the backend, so the datapath adds the service's
    id to a translated packet's event (lib/lb.h svc_id): that is the destination service then."""
    svcs = snap.services
    src = dst = None
    if svcs.ips and proto in _PORTED:
        if saddr in svcs.ips:
            src = svcs.by_addr.get((saddr, sport))
        if daddr in svcs.ips:
            dst = svcs.by_addr.get((daddr, dport))
    if svc_id and dst is None:
        dst = svcs.by_id.get(svc_id)
    return src, dst


class IfNames(Protocol):
    """ifindex -> interface name: a dict, or the agent's cache that asks the kernel."""

    def get(self, ifindex: int, /) -> str | None: ...


def record_to_flow(rec: tuple, snap: Snapshot, wall_offset_ns: int, node_name: str, boot_id: int, seq: int,
                   ifnames: IfNames | None = None, cache: dict | None = None,
                   services: Services | None = None) -> pb.Flow:
    """One RECORD tuple -> flow.Flow. wall_offset_ns turns the kernel's CLOCK_MONOTONIC stamp into wall time.
    With a cache dict, the per-peer part of the flow is built once and merged in (a C-level copy). services:
    services_of() of the record when already known."""
    side = _policy_side(rec)
    key = (snap, rec[R_SADDR], rec[R_DADDR], rec[R_SID], rec[R_DID], rec[R_COOKIE], side, rec[R_DIR], rec[R_EP])
    tmpl = cache.get(key) if cache is not None else None
    if tmpl is None:
        tmpl = _template(rec, snap, node_name, side)
        if cache is not None:
            if len(cache) >= _TEMPLATE_CACHE_MAX:
                cache.clear()
            cache[key] = tmpl
    f = pb.Flow()
    f.MergeFrom(tmpl)
    t = rec[R_TS] + wall_offset_ns
    f.time.seconds = t // 1_000_000_000
    f.time.nanos = t % 1_000_000_000
    f.uuid = flow_uuid(boot_id, seq)
    etype, sub, verdict, direction = rec[R_TYPE], rec[R_SUBTYPE], rec[R_VERDICT], rec[R_DIR]
    f.verdict = verdict
    f.traffic_direction = direction if direction in (1, 2) else 0

    proto, sport, dport = rec[R_PROTO], rec[R_SPORT], rec[R_DPORT]
    src_svc, dst_svc = services if services is not None else \
        services_of(rec[R_SADDR], sport, rec[R_DADDR], dport, proto, rec[R_SVC], snap)
    if src_svc is not None:
        f.source_service.namespace, f.source_service.name = src_svc
    if dst_svc is not None:
        f.destination_service.namespace, f.destination_service.name = dst_svc
    if proto == 6:
        tcp = f.l4.TCP
        tcp.source_port = sport
        tcp.destination_port = dport
        bits = rec[R_FLAGS]
        fl = tcp.flags
        for name, b in _TCP_FLAG_FIELDS:
            if bits & b:
                setattr(fl, name, True)
        f.Summary = tcp_flags_summary(bits)
    elif proto == 17:
        f.l4.UDP.source_port = sport
        f.l4.UDP.destination_port = dport
        f.Summary = "UDP"
    elif proto == 1:
        f.l4.ICMPv4.type = sport
        f.l4.ICMPv4.code = dport
        f.Summary = names.icmp4_summary(sport, dport)
    elif proto == 132:
        f.l4.SCTP.source_port = sport
        f.l4.SCTP.destination_port = dport
        f.Summary = "SCTP"
    elif not f.HasField("IP"):
        f.Summary = names.PROTO_NAMES.get(proto) or "IPv6"   # the only non-IPv4 event: a routable IPv6 drop
    else:
        f.Summary = names.PROTO_NAMES.get(proto) or "IPv4"   # the last layer Cilium's parser decodes

    # Cilium knows it for traces and allowed verdicts only (pkg/hubble/parser/threefour decodeIsReply); unset
    # prints as "<>" in hubble's compact output
    if etype == ev.EVENT_TRACE or (etype == ev.EVENT_POLICY_VERDICT and verdict != pb.DROPPED):
        f.is_reply.value = bool(rec[R_REPLY])
    ifindex = rec[R_IFINDEX]
    if ifindex:
        f.interface.index = ifindex
        ifname = ifnames.get(ifindex) if ifnames is not None else None
        if ifname:
            f.interface.name = ifname

    et = f.event_type
    et.type = etype
    if etype == ev.EVENT_TRACE:
        et.sub_type = sub
        f.verdict = pb.FORWARDED   # as Cilium's traces (of an audited connection too: the verdict says AUDIT)
        f.trace_observation_point = names.FLOW_TO_ENDPOINT if sub == names.TRACE_TO_ENDPOINT else sub
    elif etype == ev.EVENT_DROP:
        et.sub_type = sub
        f.drop_reason = sub
        f.drop_reason_desc = sub if sub in _DROP_REASON_DESCS else 0
        f.verdict = pb.DROPPED
    elif etype == ev.EVENT_POLICY_VERDICT:
        # sub type 0 as in Cilium (policy_verdict_notify); a denied verdict carries its drop reason in ours
        f.policy_match_type = rec[R_MATCH]
        if verdict == pb.DROPPED:
            reason = sub or ev.DROP_POLICY
            f.drop_reason = reason
            f.drop_reason_desc = reason if reason in _DROP_REASON_DESCS else 0
    else:
        et.sub_type = sub
    return f
