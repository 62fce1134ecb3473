"""What policy resolution hands to the datapath: per endpoint and direction, allow and deny entries keyed by
peer identity, protocol and port range. This is the one typed value crossing policy/ -> datapath/."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ciliumctl.services.model import ServiceTable

PROTO_ANY = 0
PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58
PROTO_SCTP = 132

IDENTITY_ANY = 0  # an entry that matches every peer (L4-only or allow-all)


class Direction(enum.IntEnum):
    INGRESS = 1  # traffic entering the endpoint
    EGRESS = 2   # traffic leaving the endpoint


class Enforcement(enum.StrEnum):
    DEFAULT = "default"  # enforce a direction once some policy selects the endpoint for it
    ALWAYS = "always"    # enforce always: no policy means deny
    NEVER = "never"      # never enforce


@dataclass(frozen=True, order=True)
class PortRange:
    """proto 0 = any protocol (then lo = hi = 0). lo = hi = 0 = any port. For ICMP/ICMPv6, lo = hi = the type."""

    proto: int
    lo: int = 0
    hi: int = 0

    @property
    def any_port(self) -> bool:
        return self.lo == 0 and self.hi == 0


@dataclass(frozen=True, order=True)
class RuleOrigin:
    """Which policy rule produced an entry: for `trace`, flows' allowed_by / denied_by, and the policy map cookie."""

    kind: str            # CiliumNetworkPolicy | CiliumClusterwideNetworkPolicy | NetworkPolicy
    name: str
    namespace: str       # "" for cluster-wide
    section: str         # ingress | ingressDeny | egress | egressDeny
    index: int           # index of the rule within that section (spec or the specs[] item flattened)


@dataclass(frozen=True)
class PolicyEntry:
    identity: int                     # peer identity; IDENTITY_ANY for every peer
    ports: PortRange
    deny: bool
    origins: tuple[RuleOrigin, ...] = ()
    proxy_port: int = 0               # != 0: the port has L7 rules, connections go to the proxy on this port


@dataclass(frozen=True)
class HTTPAllow:
    """rules.http of one port rule, folded per peer and port: requests from/to `identity` on `ports` matching one of
    `rules` (policy.model.HTTPRule) pass the proxy; `rules` empty: every request (an L4 allow of the same peer and
    port without HTTP rules widens them, as Cilium's L7 wildcarding). The L4 part is an ordinary PolicyEntry."""

    identity: int                     # the peer's identity; IDENTITY_ANY for every peer
    ports: PortRange
    rules: tuple                      # policy.model.HTTPRule
    origins: tuple[RuleOrigin, ...] = ()


@dataclass(frozen=True)
class DNSAllow:
    """rules.dns of one egress port rule: queries to `identity` on `ports` for names matching `names` are answered
    (the DNS proxy's allow list; the L4 part is an ordinary PolicyEntry)."""

    identity: int                     # the DNS server's identity; IDENTITY_ANY for every peer
    ports: PortRange
    names: tuple                      # policy.fqdn.NameMatch
    origins: tuple[RuleOrigin, ...] = ()


@dataclass
class DirectionPolicy:
    enforced: bool
    entries: list[PolicyEntry] = field(default_factory=list)


@dataclass
class EndpointPolicy:
    endpoint_id: int
    identity: int
    ingress: DirectionPolicy
    egress: DirectionPolicy
    audit: bool = field(default=False, kw_only=True)   # would-be drops AUDIT (the host: --host-firewall-audit)

    def direction(self, d: Direction) -> DirectionPolicy:
        return self.ingress if d == Direction.INGRESS else self.egress


@dataclass
class ResolvedState:
    """Everything the datapath loads for one policy revision."""

    revision: int
    identities: dict[int, frozenset[str]]       # identity -> labels ("k8s:app=x", "reserved:world", "cidr:10.0.0.0/8")
    ipcache: dict[str, int]                     # "10.0.0.0/8" / "10.200.0.5/32" -> identity
    endpoints: dict[int, EndpointPolicy]        # endpoint id -> policy
    audit: bool = False                         # would-be drops are reported as AUDIT and forwarded
    services: ServiceTable = field(default_factory=ServiceTable)   # frontends the datapath translates
    dns: dict[int, list[DNSAllow]] = field(default_factory=dict)   # endpoint id -> its egress rules.dns
    http: dict[tuple[int, int], list[HTTPAllow]] = field(default_factory=dict)   # (endpoint, direction) -> rules.http
    fqdn_selectors: tuple = ()                  # every toFQDNs selector (policy.fqdn.NameMatch): what is learned
    fqdn_prefixes: tuple[str, ...] = ()         # the rule prefixes a learned address's labels are taken from
