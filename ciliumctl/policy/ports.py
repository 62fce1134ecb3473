"""Ports and protocols of policy rules -> PortRange values (protocol numbers, port ranges, ICMP types)."""

from __future__ import annotations

from ciliumctl.policy.icmp import ICMPV4_TYPES, ICMPV6_TYPES
from ciliumctl.policy.resolved import PROTO_ANY, PROTO_ICMP, PROTO_ICMPV6, PROTO_SCTP, PROTO_TCP, PROTO_UDP, PortRange

PROTOCOLS = {"ANY": PROTO_ANY, "TCP": PROTO_TCP, "UDP": PROTO_UDP, "SCTP": PROTO_SCTP, "ICMP": PROTO_ICMP,
             "ICMPV6": PROTO_ICMPV6,
             # extended protocols (--enable-extended-ip-protocols)
             "VRRP": 112, "IGMP": 2}
PROTOCOL_NAMES = {PROTO_ANY: "ANY", PROTO_TCP: "TCP", PROTO_UDP: "UDP", PROTO_SCTP: "SCTP", PROTO_ICMP: "ICMP",
                  PROTO_ICMPV6: "ICMPv6", 112: "VRRP", 2: "IGMP"}
ANY_EXPANDS_TO = (PROTO_TCP, PROTO_UDP, PROTO_SCTP)   # Cilium's ANY with a port


def port_ranges(port: str, end_port: int, protocol: str) -> list[PortRange] | None:
    """PortRanges of one `ports` item; None for a named port (resolved per endpoint; we have no container ports).
    Port 0 = every port of the protocol; ANY with a port = TCP, UDP and SCTP."""
    if not port.isdigit():
        return None
    lo = int(port)
    hi = max(lo, end_port) if lo else 0
    proto = PROTOCOLS.get(protocol.upper(), PROTO_ANY)
    if lo == 0:
        return [PortRange(proto, 0, 0)]
    if proto == PROTO_ANY:
        return [PortRange(p, lo, hi) for p in ANY_EXPANDS_TO]
    return [PortRange(proto, lo, hi)]


def icmp_range(type_: int | str, family: str) -> PortRange | None:
    v6 = family.lower() == "ipv6"
    if isinstance(type_, str):
        t = (ICMPV6_TYPES if v6 else ICMPV4_TYPES).get(type_)
        if t is None:
            return None
    else:
        t = type_
    return PortRange(PROTO_ICMPV6 if v6 else PROTO_ICMP, t, t)


def covers(r: PortRange, proto: int, port: int) -> bool:
    """Whether the entry's PortRange covers a packet (ICMP: port = type)."""
    if r.proto == PROTO_ANY:
        return r.any_port or (proto in ANY_EXPANDS_TO and r.lo <= port <= max(r.lo, r.hi))
    if r.proto != proto:
        return False
    return r.any_port or r.lo <= port <= max(r.lo, r.hi)


def format_range(r: PortRange) -> str:
    name = PROTOCOL_NAMES.get(r.proto, str(r.proto))
    if r.proto == PROTO_ANY and r.any_port:
        return "any"
    if r.proto in (PROTO_ICMP, PROTO_ICMPV6):
        return f"{name} type {r.lo}" if not r.any_port else name
    if r.any_port:
        return f"{name} any port"
    return f"{r.lo}/{name}" if r.hi in (0, r.lo) else f"{r.lo}-{r.hi}/{name}"


def parse_port_spec(text: str) -> tuple[int, int]:
    """`80/tcp`, `53/udp`, `8/icmp`, `128/icmpv6`, `80` (tcp) -> (proto, port). Raises ValueError."""
    port_s, _, proto_s = text.strip().partition("/")
    proto_s = (proto_s or "tcp").upper()
    if proto_s not in PROTOCOLS or proto_s == "ANY":
        raise ValueError(f"protocol {proto_s.lower()!r} is not one of tcp, udp, sctp, icmp, icmpv6")
    proto = PROTOCOLS[proto_s]
    if proto in (PROTO_ICMP, PROTO_ICMPV6) and not port_s.isdigit():
        t = icmp_range(port_s, "IPv6" if proto == PROTO_ICMPV6 else "IPv4")
        if t is None:
            raise ValueError(f"ICMP type {port_s!r} is neither a number nor a known type name")
        return proto, t.lo
    if not port_s.isdigit():
        raise ValueError(f"port {port_s!r} is not a number")
    port = int(port_s)
    limit = 255 if proto in (PROTO_ICMP, PROTO_ICMPV6) else 65535
    if not 0 <= port <= limit:
        raise ValueError(f"port {port} is out of range 0-{limit}")
    return proto, port
