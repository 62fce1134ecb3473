"""The policy language as typed values: CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy (cilium.io/v2)
and Kubernetes NetworkPolicy (networking.k8s.io/v1). Data only: no selection, no resolution.

`parse_policy(data)` builds a Policy from an already validated plain dict (policy.validate checks first). A field
that is absent stays None, an empty list stays an empty tuple: Cilium gives the two different meanings
(`toEndpoints: []` selects nothing, no `toEndpoints` leaves L3 open when toPorts is given).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

CNP = "CiliumNetworkPolicy"
CCNP = "CiliumClusterwideNetworkPolicy"
KNP = "NetworkPolicy"
KINDS = (CNP, CCNP, KNP)

INGRESS, INGRESS_DENY, EGRESS, EGRESS_DENY = "ingress", "ingressDeny", "egress", "egressDeny"
SECTIONS = (INGRESS, INGRESS_DENY, EGRESS, EGRESS_DENY)


# ------------------------------------------------------------------------------------------------- selectors

@dataclass(frozen=True)
class SelectorRequirement:
    key: str
    operator: str                     # In | NotIn | Exists | DoesNotExist
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabelSelector:
    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[SelectorRequirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.match_labels and not self.match_expressions


# ------------------------------------------------------------------------------------------------- L4 / L7

@dataclass(frozen=True)
class PortProtocol:
    port: str = "0"                   # a number, "0" (every port) or a named port ("http")
    protocol: str = "ANY"             # TCP | UDP | SCTP | ICMP | ICMPV6 | ANY (| extended protocol names)
    end_port: int = 0

    @property
    def is_named(self) -> bool:
        return not self.port.isdigit()


@dataclass(frozen=True)
class HTTPHeaderMatch:
    name: str
    value: str = ""
    mismatch: str = ""
    secret: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class HTTPRule:
    method: str = ""
    path: str = ""
    host: str = ""
    headers: tuple[str, ...] = ()
    header_matches: tuple[HTTPHeaderMatch, ...] = ()


@dataclass(frozen=True)
class DNSRule:
    match_name: str = ""
    match_pattern: str = ""


@dataclass(frozen=True)
class KafkaRule:
    role: str = ""
    api_key: str = ""
    api_version: str = ""
    client_id: str = ""
    topic: str = ""


@dataclass(frozen=True)
class L7Rules:
    http: tuple[HTTPRule, ...] | None = None
    dns: tuple[DNSRule, ...] | None = None
    kafka: tuple[KafkaRule, ...] | None = None
    l7proto: str = ""
    l7: tuple[Mapping[str, str], ...] | None = None

    @property
    def empty(self) -> bool:
        return not (self.http or self.dns or self.kafka or self.l7proto or self.l7)


@dataclass(frozen=True)
class PortRule:
    ports: tuple[PortProtocol, ...] = ()
    rules: L7Rules | None = None
    server_names: tuple[str, ...] = ()
    terminating_tls: Mapping[str, Any] | None = None
    originating_tls: Mapping[str, Any] | None = None
    listener: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ICMPField:
    type: int | str                   # a number or a name (EchoRequest, ...)
    family: str = "IPv4"              # IPv4 | IPv6


@dataclass(frozen=True)
class ICMPRule:
    fields: tuple[ICMPField, ...] = ()


# ------------------------------------------------------------------------------------------------- L3 peers

@dataclass(frozen=True)
class CIDRRule:
    cidr: str = ""
    except_: tuple[str, ...] = ()
    cidr_group_ref: str = ""
    cidr_group_selector: LabelSelector | None = None


@dataclass(frozen=True)
class K8sServiceNamespace:
    service_name: str = ""
    namespace: str = ""


@dataclass(frozen=True)
class ServiceSelector:
    selector: LabelSelector = field(default_factory=LabelSelector)
    namespace: str = ""


@dataclass(frozen=True)
class Service:
    k8s_service: K8sServiceNamespace | None = None
    k8s_service_selector: ServiceSelector | None = None


@dataclass(frozen=True)
class FQDNSelector:
    match_name: str = ""
    match_pattern: str = ""


@dataclass(frozen=True)
class PeerRule:
    """One item of ingress / ingressDeny (from*) or egress / egressDeny (to*): the peers and the ports.

    Peer fields are None when absent. `services` and `fqdns` exist only in egress."""

    endpoints: tuple[LabelSelector, ...] | None = None
    entities: tuple[str, ...] | None = None
    cidrs: tuple[str, ...] | None = None
    cidr_sets: tuple[CIDRRule, ...] | None = None
    nodes: tuple[LabelSelector, ...] | None = None
    requires: tuple[LabelSelector, ...] | None = None
    groups: tuple[Mapping[str, Any], ...] | None = None
    services: tuple[Service, ...] | None = None
    fqdns: tuple[FQDNSelector, ...] | None = None
    to_ports: tuple[PortRule, ...] | None = None
    icmps: tuple[ICMPRule, ...] | None = None
    authentication: Mapping[str, Any] | None = None

    @property
    def has_l3(self) -> bool:
        return any(f is not None for f in (self.endpoints, self.entities, self.cidrs, self.cidr_sets, self.nodes,
                                           self.groups, self.services, self.fqdns))

    @property
    def has_l4(self) -> bool:
        return bool(self.to_ports) or bool(self.icmps)


@dataclass(frozen=True)
class DefaultDeny:
    ingress: bool | None = None
    egress: bool | None = None


@dataclass(frozen=True)
class Rule:
    """One Cilium rule (a `spec`, or one item of `specs`)."""

    endpoint_selector: LabelSelector | None = None
    node_selector: LabelSelector | None = None
    ingress: tuple[PeerRule, ...] | None = None
    ingress_deny: tuple[PeerRule, ...] | None = None
    egress: tuple[PeerRule, ...] | None = None
    egress_deny: tuple[PeerRule, ...] | None = None
    enable_default_deny: DefaultDeny = field(default_factory=DefaultDeny)
    description: str = ""
    labels: tuple[tuple[str, str, str], ...] = ()   # (source, key, value)
    path: tuple = ()                  # where the rule is in its object: ("spec",) or ("specs", 2)

    def section(self, name: str) -> tuple[PeerRule, ...]:
        return {INGRESS: self.ingress, INGRESS_DENY: self.ingress_deny, EGRESS: self.egress,
                EGRESS_DENY: self.egress_deny}[name] or ()


# ------------------------------------------------------------------------------------------------- k8s NetworkPolicy

@dataclass(frozen=True)
class IPBlock:
    cidr: str
    except_: tuple[str, ...] = ()


@dataclass(frozen=True)
class NetworkPolicyPeer:
    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None


@dataclass(frozen=True)
class NetworkPolicyPort:
    protocol: str = "TCP"
    port: str | None = None           # number or named port; None = every port
    end_port: int = 0


@dataclass(frozen=True)
class NetworkPolicyRule:
    peers: tuple[NetworkPolicyPeer, ...] | None = None    # `from` (ingress) or `to` (egress)
    ports: tuple[NetworkPolicyPort, ...] | None = None


@dataclass(frozen=True)
class NetworkPolicySpec:
    pod_selector: LabelSelector = field(default_factory=LabelSelector)
    policy_types: tuple[str, ...] = ()
    ingress: tuple[NetworkPolicyRule, ...] | None = None
    egress: tuple[NetworkPolicyRule, ...] | None = None


# ------------------------------------------------------------------------------------------------- the policy

@dataclass(frozen=True)
class Policy:
    kind: str
    name: str
    namespace: str                    # "" for CiliumClusterwideNetworkPolicy
    rules: tuple[Rule, ...] = ()      # CNP / CCNP: spec first, then specs[]
    network_policy: NetworkPolicySpec | None = None    # NetworkPolicy
    metadata_labels: tuple[tuple[str, str], ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"


# ------------------------------------------------------------------------------------------------- parsing

def _list(v) -> list:
    if v is None:
        return []
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _opt_tuple(data: Mapping, key: str, fn) -> tuple | None:
    if key not in data or data[key] is None:
        return None
    return tuple(fn(x) for x in _list(data[key]))


def _str(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _int(v) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


def parse_selector(data) -> LabelSelector | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        return LabelSelector()
    ml = tuple(sorted((_str(k), _str(v)) for k, v in (data.get("matchLabels") or {}).items()))
    me = tuple(SelectorRequirement(_str(e.get("key")), _str(e.get("operator")),
                                   tuple(_str(x) for x in _list(e.get("values"))))
               for e in _list(data.get("matchExpressions")) if isinstance(e, dict))
    return LabelSelector(ml, me)


def _endpoint_selector(data) -> LabelSelector:
    """An api.EndpointSelector: its UnmarshalJSON makes a null the empty selector (it selects everything)."""
    sel = parse_selector(data)
    return sel if sel is not None else LabelSelector()


def _port_protocol(d: Mapping) -> PortProtocol:
    proto = _str(d.get("protocol")).upper() or "ANY"
    return PortProtocol(port=_str(d.get("port")) or "0", protocol=proto, end_port=_int(d.get("endPort")))


def _l7(d) -> L7Rules | None:
    if not isinstance(d, dict):
        return None
    http = _opt_tuple(d, "http", lambda h: HTTPRule(
        method=_str(h.get("method")), path=_str(h.get("path")), host=_str(h.get("host")),
        headers=tuple(_str(x) for x in _list(h.get("headers"))),
        header_matches=tuple(HTTPHeaderMatch(_str(m.get("name")), _str(m.get("value")), _str(m.get("mismatch")),
                                             m.get("secret")) for m in _list(h.get("headerMatches")))))
    dns = _opt_tuple(d, "dns", lambda x: DNSRule(_str(x.get("matchName")), _str(x.get("matchPattern"))))
    kafka = _opt_tuple(d, "kafka", lambda x: KafkaRule(_str(x.get("role")), _str(x.get("apiKey")),
                                                       _str(x.get("apiVersion")), _str(x.get("clientID")),
                                                       _str(x.get("topic"))))
    l7 = _opt_tuple(d, "l7", lambda x: {str(k): _str(v) for k, v in (x or {}).items()})
    return L7Rules(http=http, dns=dns, kafka=kafka, l7proto=_str(d.get("l7proto")), l7=l7)


def _port_rule(d: Mapping) -> PortRule:
    return PortRule(ports=tuple(_port_protocol(p) for p in _list(d.get("ports")) if isinstance(p, dict)),
                    rules=_l7(d.get("rules")),
                    server_names=tuple(_str(x) for x in _list(d.get("serverNames"))),
                    terminating_tls=d.get("terminatingTLS"), originating_tls=d.get("originatingTLS"),
                    listener=d.get("listener"))


def _icmp_rule(d: Mapping) -> ICMPRule:
    fields = []
    for f in _list(d.get("fields")):
        t = f.get("type")
        t = t if isinstance(t, int) else (int(t) if _str(t).isdigit() else _str(t))
        fields.append(ICMPField(type=t, family=_str(f.get("family")) or "IPv4"))
    return ICMPRule(tuple(fields))


def _cidr_rule(d) -> CIDRRule:
    if not isinstance(d, dict):
        return CIDRRule(cidr=_str(d))
    return CIDRRule(cidr=_str(d.get("cidr")), except_=tuple(_str(x) for x in _list(d.get("except"))),
                    cidr_group_ref=_str(d.get("cidrGroupRef")),
                    cidr_group_selector=parse_selector(d.get("cidrGroupSelector")))


def _service(d: Mapping) -> Service:
    ks = d.get("k8sService")
    kss = d.get("k8sServiceSelector")
    return Service(
        k8s_service=K8sServiceNamespace(_str(ks.get("serviceName")), _str(ks.get("namespace")))
        if isinstance(ks, dict) else None,
        k8s_service_selector=ServiceSelector(parse_selector(kss.get("selector")) or LabelSelector(),
                                             _str(kss.get("namespace"))) if isinstance(kss, dict) else None)


def _peer_rule(d, direction: str) -> PeerRule:
    if not isinstance(d, dict):
        return PeerRule()
    p = "from" if direction == "ingress" else "to"
    return PeerRule(
        endpoints=_opt_tuple(d, p + "Endpoints", _endpoint_selector),
        entities=_opt_tuple(d, p + "Entities", lambda x: _str(x).lower()),
        cidrs=_opt_tuple(d, p + "CIDR", _str),
        cidr_sets=_opt_tuple(d, p + "CIDRSet", _cidr_rule),
        nodes=_opt_tuple(d, p + "Nodes", _endpoint_selector),
        requires=_opt_tuple(d, p + "Requires", parse_selector),
        groups=_opt_tuple(d, p + "Groups", lambda x: x),
        services=_opt_tuple(d, "toServices", _service) if direction == "egress" else None,
        fqdns=_opt_tuple(d, "toFQDNs", lambda x: FQDNSelector(_str(x.get("matchName")), _str(x.get("matchPattern"))))
        if direction == "egress" else None,
        to_ports=_opt_tuple(d, "toPorts", lambda x: _port_rule(x) if isinstance(x, dict) else PortRule()),
        icmps=_opt_tuple(d, "icmps", lambda x: _icmp_rule(x) if isinstance(x, dict) else ICMPRule()),
        authentication=d.get("authentication"))


def _opt_bool(v) -> bool | None:
    return None if v is None else bool(v)


def parse_rule(d: Mapping, path: tuple = ()) -> Rule:
    dd = d.get("enableDefaultDeny") or {}
    return Rule(
        endpoint_selector=_endpoint_selector(d["endpointSelector"]) if "endpointSelector" in d else None,
        node_selector=_endpoint_selector(d["nodeSelector"]) if "nodeSelector" in d else None,
        ingress=_opt_tuple(d, "ingress", lambda x: _peer_rule(x, "ingress")),
        ingress_deny=_opt_tuple(d, "ingressDeny", lambda x: _peer_rule(x, "ingress")),
        egress=_opt_tuple(d, "egress", lambda x: _peer_rule(x, "egress")),
        egress_deny=_opt_tuple(d, "egressDeny", lambda x: _peer_rule(x, "egress")),
        enable_default_deny=DefaultDeny(_opt_bool(dd.get("ingress")), _opt_bool(dd.get("egress")))
        if isinstance(dd, dict) else DefaultDeny(),
        description=_str(d.get("description")),
        labels=tuple((_str(lab.get("source")), _str(lab.get("key")), _str(lab.get("value")))
                     for lab in _list(d.get("labels")) if isinstance(lab, dict)),
        path=path)


def _knp_peer(d: Mapping) -> NetworkPolicyPeer:
    ib = d.get("ipBlock")
    return NetworkPolicyPeer(
        pod_selector=parse_selector(d.get("podSelector")),
        namespace_selector=parse_selector(d.get("namespaceSelector")),
        ip_block=IPBlock(_str(ib.get("cidr")), tuple(_str(x) for x in _list(ib.get("except"))))
        if isinstance(ib, dict) else None)


def _knp_port(d: Mapping) -> NetworkPolicyPort:
    port = d.get("port")
    return NetworkPolicyPort(protocol=_str(d.get("protocol")).upper() or "TCP",
                             port=None if port is None else _str(port), end_port=_int(d.get("endPort")))


def _knp_rule(d, peers_key: str) -> NetworkPolicyRule:
    if not isinstance(d, dict):
        return NetworkPolicyRule()
    return NetworkPolicyRule(
        peers=_opt_tuple(d, peers_key, lambda x: _knp_peer(x) if isinstance(x, dict) else NetworkPolicyPeer()),
        ports=_opt_tuple(d, "ports", lambda x: _knp_port(x) if isinstance(x, dict) else NetworkPolicyPort()))


def parse_network_policy_spec(spec: Mapping) -> NetworkPolicySpec:
    return NetworkPolicySpec(
        pod_selector=parse_selector(spec.get("podSelector")) or LabelSelector(),
        policy_types=tuple(_str(t) for t in _list(spec.get("policyTypes"))),
        ingress=_opt_tuple(spec, "ingress", lambda x: _knp_rule(x, "from")),
        egress=_opt_tuple(spec, "egress", lambda x: _knp_rule(x, "to")))


def parse_policy(data: Mapping) -> Policy:
    """A Policy from one already-valid policy object (plain dict as loaded from YAML/JSON)."""
    if not isinstance(data, dict):
        raise ValueError("a policy object must be a mapping")
    kind = _str(data.get("kind"))
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not a policy kind ({', '.join(KINDS)})")
    meta = data.get("metadata") or {}
    name = _str(meta.get("name"))
    namespace = "" if kind == CCNP else (_str(meta.get("namespace")) or "default")
    mlabels = tuple(sorted((_str(k), _str(v)) for k, v in (meta.get("labels") or {}).items()))
    if kind == KNP:
        return Policy(kind, name, namespace, network_policy=parse_network_policy_spec(data.get("spec") or {}),
                      metadata_labels=mlabels)
    rules = []
    if isinstance(data.get("spec"), dict):
        rules.append(parse_rule(data["spec"], ("spec",)))
    rules.extend(parse_rule(s, ("specs", i)) for i, s in enumerate(_list(data.get("specs"))) if isinstance(s, dict))
    return Policy(kind, name, namespace, rules=tuple(rules), metadata_labels=mlabels)
