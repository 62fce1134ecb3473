"""What of a policy the datapath does not enforce, where it is, and what is enforced instead.

The one answer to "is this policy enforced as written?", used by `policy apply` (warnings, --strict-enforcement),
`policy get`, `status`, `policy trace`, resolve's notes and the agent's `Enforced` condition in cluster mode.
Pure: a model.Policy in, Gap values out; `locate` adds file:line:col from a loaded document.

What the datapath (bpf/bpf_lxc.c over datapath/mapstate.py) does: IPv4 only (routable IPv6 is dropped wherever
a direction is enforced); L3 by identity from an ipcache that holds endpoints, CIDR prefixes of rules and
0.0.0.0/0 = world, nothing else (no host or node addresses, no kube-apiserver, health or ingress identities);
L4 by protocol and port or ICMP type. DNS: egress rules.dns through the agent's DNS proxy (the datapath
redirects the endpoint's DNS to it, node/dns_proxy/server.py)
and toFQDNs by the addresses it learns from allowed answers
(as in Cilium, a name no rules.dns lets an endpoint look up is never learned). HTTP: rules.http through the
agent's HAProxy (node/http_proxy/config.py; without a running agent the ports refuse). No other proxy (Kafka,
generic L7, TLS, listeners), no service, cloud-group or CIDR-group watch, no mutual authentication. The host
endpoint (nodeSelector rules) only where the node runs the host firewall (`install --host-firewall`, bpf_host.c):
callers say so with `HostFirewall`; then the node's addresses are host (1) in the ipcache, and the other nodes'
remote-node (6) when it knows them; in cluster mode also the API server's kube-apiserver (7), and with
--enable-node-selector-labels the other nodes' identities of their labels (fromNodes/toNodes; cluster mode: their
Node objects', node mode: --remote-nodes with --remote-node-labels). Health endpoints do
not exist here: the entity health selects nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ciliumctl.base.errors import Finding
from ciliumctl.policy import model
from ciliumctl.policy.findings import format_path
from ciliumctl.policy.ports import port_ranges
from ciliumctl.policy.resolved import PROTO_ANY, PortRange, RuleOrigin

STRICT_FLAG = "--strict-enforcement"
FULL, PARTIAL = "full", "partial"

# Entities whose identity never reaches this datapath's ipcache (it holds endpoints, CIDR prefixes and world):
# entity -> why. `world-ipv4`/`world-ipv6` are the dual-stack split of world (reserved ids 9/10), never given
# here. Names: Cilium's pkg/policy/api/entity.go.
UNSEEN_ENTITIES = {
    "host": "the node's addresses are not in the ipcache: host traffic arrives as world",
    "remote-node": "other nodes' addresses are not in the ipcache: their traffic arrives as world",
    "kube-apiserver": "the API server's addresses are not in the ipcache: its traffic arrives as world",
    "health": "there are no health endpoints",
    "ingress": "there is no ingress (Envoy) endpoint",
    "unmanaged": "unmanaged pods are not known",
    "init": "endpoints get their labels before any traffic, never the init identity",
    "world-ipv4": "world traffic has the identity world (2), never world-ipv4",
}
CLUSTER_UNSEEN = ("host", "remote-node", "kube-apiserver", "health", "ingress")

L7_KINDS = {"http": ("l7-http", "L7 HTTP rule (rules.http)"), "kafka": ("l7-kafka", "L7 Kafka rule (rules.kafka)"),
            "dns": ("l7-dns", "L7 DNS rule (rules.dns)"), "l7proto": ("l7-generic", "L7 parser rule (rules.l7proto)"),
            "l7": ("l7-generic", "L7 rule (rules.l7)")}
# gap kind -> what `policy trace` says when a verdict rests on it
TRACE_TEXT = {
    "l7-http": "L7 not enforced: allowed at L4", "l7-kafka": "L7 not enforced: allowed at L4",
    "l7-dns": "L7 not enforced: allowed at L4", "l7-generic": "L7 not enforced: allowed at L4",
    "tls-sni": "TLS server names not enforced: allowed at L4",
    "tls-inspection": "TLS interception not enforced: allowed at L4",
    "listener": "listener redirect not enforced: allowed at L4",
    "authentication": "authentication not enforced: allowed without it",
    "requires": "fromRequires/toRequires not enforced: allowed without the requirement",
    "host-policy": "host policy not enforced: the host firewall is off (install --host-firewall)",
}


@dataclass(frozen=True)
class HostFirewall:
    """What the node's host firewall makes enforceable: nodeSelector rules, the entity host, remote-node when
    the node knows the other nodes' addresses (install --remote-nodes, or cluster mode's Node objects), and
    kube-apiserver when it knows the API server's (cluster mode: the `kubernetes` Service's endpoints), and
    fromNodes/toNodes when every other node has an identity of its labels (--enable-node-selector-labels, with
    the other nodes known: cluster mode's Node objects, or node mode's --remote-nodes and --remote-node-labels)."""

    remote_nodes: bool = False
    kube_apiserver: bool = False
    node_identities: bool = False      # other nodes have identities of their labels: fromNodes/toNodes select

    def seen(self) -> frozenset[str]:
        return frozenset({"host"} | ({"remote-node"} if self.remote_nodes else set())
                         | ({"kube-apiserver"} if self.kube_apiserver else set()))


@dataclass(frozen=True)
class Gap:
    """One part of a policy the datapath does not enforce as written."""

    kind: str                      # stable id: l7-http, fqdn, host-policy, entity, ipv6, named-port, ...
    what: str                      # "the L7 HTTP rule (rules.http)"
    instead: str                   # what the datapath enforces instead
    path: tuple                    # into the policy object: ("spec", "ingress", 0, "toPorts", 0, "rules", "http")
    policy: str                    # model.Policy.ref
    origin: RuleOrigin | None = None           # the rule item (as resolve numbers them); None: a whole rule
    ports: tuple[PortRange, ...] = ()          # the traffic it concerns when port specific (L7 on 80/TCP)
    weaker: bool = True            # True: the datapath lets through traffic the policy refuses
    key: bool = True               # point at the key naming `path` (else at its value)

    @property
    def path_text(self) -> str:
        return format_path(self.path)

    def sentence(self) -> str:
        return f"{self.what} is not enforced: {self.instead}"

    def note(self) -> str:
        """resolve's and trace's note: the policy, the rule item and the sentence."""
        where = f"{self.origin.section}[{self.origin.index}]" if self.origin else self.path_text
        return f"{self.policy} {where}: {self.sentence()}"

    @property
    def trace_text(self) -> str:
        return TRACE_TEXT.get(self.kind, f"{self.what} not enforced")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "path": self.path_text, "what": self.what, "instead": self.instead,
                "weaker": self.weaker}


@dataclass(frozen=True)
class LocatedGap:
    """A gap with the file position of the part it names."""

    gap: Gap
    file: str
    line: int
    column: int
    path: str                      # with a List item's prefix: items[2].spec.ingress[0]...

    def warning(self) -> str:
        return (f"{self.file}:{self.line}:{self.column}: warning: {self.gap.sentence()} "
                f"({STRICT_FLAG} refuses it)")

    def error(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: error: {self.gap.sentence()} (refused by {STRICT_FLAG})"

    def to_dict(self) -> dict:
        return {"file": self.file, "line": self.line, "column": self.column, **self.gap.to_dict(),
                "path": self.path, "policy": self.gap.policy}


class UnenforcedPolicies(Finding):
    """--strict-enforcement refused a set with unenforced parts (exit 1); nothing was applied."""

    def __init__(self, gaps: list):
        self.gaps = gaps
        policies = {(g.gap.policy if isinstance(g, LocatedGap) else g.policy) for g in gaps}
        super().__init__(f"{len(gaps)} part(s) of {len(policies)} policy(ies) are not enforced by the datapath "
                         f"(listed above): nothing applied; without {STRICT_FLAG} they are applied with these "
                         "parts unenforced")


# ------------------------------------------------------------------------------------------------ finding gaps

def _ports_text(pr: model.PortRule) -> str:
    if not pr.ports:
        return "every port"
    parts = []
    for pp in pr.ports:
        port = pp.port if pp.port != "0" else "any port"
        if pp.end_port and pp.port.isdigit() and pp.end_port > int(pp.port):
            port = f"{pp.port}-{pp.end_port}"
        parts.append(f"{port}/{pp.protocol}")
    return ", ".join(parts)


def _ranges(pr: model.PortRule) -> tuple[PortRange, ...]:
    if not pr.ports:
        return (PortRange(PROTO_ANY, 0, 0),)
    out: list[PortRange] = []
    for pp in pr.ports:
        out.extend(port_ranges(pp.port, pp.end_port, pp.protocol) or ())
    return tuple(out)


def _is_ipv6(text: str) -> bool:
    try:
        return ipaddress.ip_network(text.strip(), strict=False).version == 6
    except ValueError:
        return False


_IPV6_INSTEAD = "the datapath is IPv4-only: routable IPv6 is dropped wherever policy is enforced"


class _Finder:
    def __init__(self, pol: model.Policy, host: HostFirewall | None = None):
        self.pol = pol
        self.host = host
        self.unseen = {k: v for k, v in UNSEEN_ENTITIES.items() if not host or k not in host.seen()}
        self.gaps: list[Gap] = []

    def add(self, kind: str, what: str, instead: str, path: tuple, origin: RuleOrigin | None = None,
            ports: tuple = (), weaker: bool = True, key: bool = True) -> None:
        self.gaps.append(Gap(kind, what, instead, tuple(path), self.pol.ref, origin, ports, weaker, key))

    # a part that matches nothing: in an allow rule it allows nothing (stricter), in a deny rule it denies
    # nothing (weaker)
    def nothing(self, kind: str, what: str, why: str, path: tuple, origin: RuleOrigin, deny: bool,
                key: bool = True, noun: str = "this peer") -> None:
        effect = f"{noun} denies nothing" if deny else f"{noun} allows nothing"
        self.add(kind, what, f"{effect} ({why})", path, origin, weaker=deny, key=key)

    def cilium(self) -> list[Gap]:
        counters = dict.fromkeys(model.SECTIONS, 0)
        for rule in self.pol.rules:
            if rule.endpoint_selector is None and rule.node_selector is None:
                continue                   # selects nothing, and resolve does not number its items either
            host = rule.endpoint_selector is None and self.host is None
            if host:
                self.add("host-policy", "the host policy (nodeSelector)",
                         "the node's own traffic is not filtered by this rule (the host firewall is off: "
                         "install --host-firewall)", rule.path + ("nodeSelector",))
            for section in model.SECTIONS:
                deny = section in (model.INGRESS_DENY, model.EGRESS_DENY)
                prefix = "to" if section in (model.EGRESS, model.EGRESS_DENY) else "from"
                for j, item in enumerate(rule.section(section)):
                    origin = RuleOrigin(self.pol.kind, self.pol.name, self.pol.namespace, section,
                                        counters[section])
                    counters[section] += 1
                    if not host:           # a host rule is not enforced at all: one gap for it is enough
                        self.item(item, rule.path + (section, j), origin, deny, prefix)
        return self.gaps

    def item(self, item: model.PeerRule, path: tuple, origin: RuleOrigin, deny: bool, prefix: str) -> None:
        self.peers(item, path, origin, deny, prefix)
        for k, pr in enumerate(item.to_ports or ()):
            self.port_rule(pr, path + ("toPorts", k), origin, deny)
        for a, icmp in enumerate(item.icmps or ()):
            for b, f in enumerate(icmp.fields):
                if f.family.lower() == "ipv6":
                    self.add("ipv6", f"the ICMPv6 type {f.type}", _IPV6_INSTEAD,
                             path + ("icmps", a, "fields", b, "family"), origin, weaker=False, key=False)
        auth = item.authentication
        mode = auth.get("mode") if isinstance(auth, Mapping) else None
        if mode and mode != "disabled":
            self.add("authentication", f"mutual authentication (authentication.mode {mode})",
                     "traffic is allowed without authentication", path + ("authentication",), origin)

    def peers(self, item: model.PeerRule, path: tuple, origin: RuleOrigin, deny: bool, prefix: str) -> None:
        for n, ent in enumerate(item.entities or ()):
            where = path + (f"{prefix}Entities", n)
            if ent == "world-ipv6":
                self.add("ipv6", "the entity world-ipv6", _IPV6_INSTEAD, where, origin, weaker=False, key=False)
            elif ent in self.unseen:
                self.nothing("entity", f"the entity {ent}", self.unseen[ent], where, origin, deny, key=False)
            elif ent == "cluster":
                effect = "is not denied" if deny else "is not allowed"
                unseen = [e for e in CLUSTER_UNSEEN if e in self.unseen]   # the host firewall sees host, ...
                self.add("entity", "the entity cluster", f"only the cluster's endpoints match; traffic of "
                         f"{', '.join(unseen)} arrives as world and {effect} by it", where, origin,
                         weaker=deny, key=False)
        for n, sel in enumerate(item.endpoints or ()):
            for k, _ in sel.match_labels:
                name = k.partition(":")[2] if k.startswith("reserved:") else ""
                if name in self.unseen:
                    self.nothing("entity", f"the selector on reserved:{name}", self.unseen[name],
                                 path + (f"{prefix}Endpoints", n, "matchLabels", k), origin, deny)
        for n, c in enumerate(item.cidrs or ()):
            if _is_ipv6(c):
                self.add("ipv6", f"the IPv6 CIDR {c}", _IPV6_INSTEAD, path + (f"{prefix}CIDR", n), origin,
                         weaker=False, key=False)
        for n, cs in enumerate(item.cidr_sets or ()):
            where = path + (f"{prefix}CIDRSet", n)
            if cs.cidr and _is_ipv6(cs.cidr):
                self.add("ipv6", f"the IPv6 CIDR {cs.cidr}", _IPV6_INSTEAD, where + ("cidr",), origin,
                         weaker=False, key=False)
            if cs.cidr_group_ref or cs.cidr_group_selector is not None:
                field_ = "cidrGroupRef" if cs.cidr_group_ref else "cidrGroupSelector"
                self.nothing("cidr-group", f"the CIDR group ({field_})",
                             "CiliumCIDRGroup objects are not read", where + (field_,), origin, deny)
        if item.nodes is not None and not (self.host and self.host.node_identities):
            self.nothing("nodes", f"the node peer ({prefix}Nodes)",
                         "other nodes have no identities of their labels: their traffic arrives as world or "
                         "remote-node (install --enable-node-selector-labels, with --remote-nodes and "
                         "--remote-node-labels in node mode)",
                         path + (f"{prefix}Nodes",), origin, deny)
        if item.services:
            self.nothing("services", "the service peer (toServices)", "services are not watched",
                         path + ("toServices",), origin, deny)
        if item.groups:
            self.nothing("groups", f"the cloud group peer ({prefix}Groups)", "cloud provider groups are not read",
                         path + (f"{prefix}Groups",), origin, deny)
        if item.requires:
            self.add("requires", f"the {prefix}Requires constraint",
                     "it is ignored: the rule's peers match without the required labels",
                     path + (f"{prefix}Requires",), origin, weaker=not deny)

    def http_rules(self, rules: tuple, path: tuple, origin: RuleOrigin, ranges: tuple) -> None:
        """What HAProxy does not do of rules.http: a headerMatches mismatch action lets the request pass as in
        Cilium, but the header is not added, replaced or removed, nor the mismatch logged."""
        for i, rule in enumerate(rules):
            for j, m in enumerate(rule.header_matches):
                if m.mismatch:
                    self.add("l7-http-mismatch", f"the headerMatches mismatch action ({m.mismatch})",
                             "the request passes, its header is not edited and the mismatch not logged",
                             path + (i, "headerMatches", j, "mismatch"), origin, ranges, weaker=False)

    def port_rule(self, pr: model.PortRule, path: tuple, origin: RuleOrigin, deny: bool) -> None:
        ports, ranges = _ports_text(pr), _ranges(pr)

        def at_l4(missing: str) -> str:
            return f"all traffic on {ports} with the rule's peers is allowed at L4 ({missing})"

        rules = pr.rules
        if rules is not None:
            for name, (kind, what) in L7_KINDS.items():
                if name == "dns" and origin.section == model.EGRESS:
                    continue           # the DNS proxy enforces it
                if name == "http":
                    self.http_rules(rules.http or (), path + ("rules", "http"), origin, ranges)
                    continue           # the agent's HAProxy enforces it (node/http_proxy/config.py)
                if getattr(rules, name):
                    self.add(kind, f"the {what}", at_l4("no L7 proxy"), path + ("rules", name), origin, ranges)
        if pr.server_names:
            self.add("tls-sni", "the TLS server names (serverNames)", at_l4("no SNI check"),
                     path + ("serverNames",), origin, ranges)
        for name in ("terminatingTLS", "originatingTLS"):
            if (pr.terminating_tls if name == "terminatingTLS" else pr.originating_tls) is not None:
                self.add("tls-inspection", f"TLS interception ({name})", at_l4("no TLS proxy"),
                         path + (name,), origin, ranges)
        if pr.listener is not None:
            self.add("listener", "the listener redirect (listener)", at_l4("no Envoy listener"),
                     path + ("listener",), origin, ranges)
        for m, pp in enumerate(pr.ports):
            if pp.is_named:
                self.nothing("named-port", f"the named port {pp.port!r}",
                             "container ports are not known, so the name is not resolved to a number",
                             path + ("ports", m, "port"), origin, deny, key=False, noun="the port")

    def network_policy(self) -> list[Gap]:
        spec = self.pol.network_policy or model.NetworkPolicySpec()
        for section, rules, peers_key in ((model.INGRESS, spec.ingress, "from"), (model.EGRESS, spec.egress, "to")):
            for i, r in enumerate(rules or ()):
                origin = RuleOrigin(self.pol.kind, self.pol.name, self.pol.namespace, section, i)
                path = ("spec", section, i)
                for j, p in enumerate(r.ports or ()):
                    if p.port is not None and not p.port.isdigit():
                        self.nothing("named-port", f"the named port {p.port!r}",
                                     "container ports are not known, so the name is not resolved to a number",
                                     path + ("ports", j, "port"), origin, False, key=False, noun="the port")
                for j, peer in enumerate(r.peers or ()):
                    if peer.ip_block is not None and _is_ipv6(peer.ip_block.cidr):
                        self.add("ipv6", f"the IPv6 ipBlock {peer.ip_block.cidr}", _IPV6_INSTEAD,
                                 path + (peers_key, j, "ipBlock", "cidr"), origin, weaker=False, key=False)
        return self.gaps


def find_gaps(pol: model.Policy, host: HostFirewall | None = None) -> list[Gap]:
    """Every part of one policy the datapath does not enforce as written, in document order. host: the node's
    host firewall when it runs one."""
    finder = _Finder(pol, host)
    return finder.network_policy() if pol.kind == model.KNP else finder.cilium()


def gaps_of_data(data: Mapping, host: HostFirewall | None = None) -> list[Gap]:
    """find_gaps of a plain policy object (a stored policy, an API object); [] for what is not a policy."""
    try:
        return find_gaps(model.parse_policy(data), host)
    except (ValueError, TypeError, AttributeError):
        return []


def locate(doc, host: HostFirewall | None = None) -> list[LocatedGap]:
    """The gaps of one loaded document (policy.load.Document) with the file:line:col of each part."""
    if not isinstance(doc.data, Mapping) or doc.data.get("kind") not in model.KINDS:
        return []
    out = []
    for g in gaps_of_data(doc.data, host):
        line, column = doc.pos(g.path, key=g.key)
        out.append(LocatedGap(g, doc.file, line, column, format_path(g.path, doc.path_prefix)))
    return out


def locate_all(docs: Iterable, host: HostFirewall | None = None) -> list[LocatedGap]:
    return [lg for doc in docs for lg in locate(doc, host)]


# ------------------------------------------------------------------------------------------------ summaries

def enforcement(gaps: list) -> str:
    """`full` when nothing is left out, else `partial`."""
    return PARTIAL if gaps else FULL


@dataclass
class PolicyEnforcement:
    """One policy's enforcement for `policy get` and `status`."""

    policy: str
    gaps: list[Gap] = field(default_factory=list)

    @property
    def enforced(self) -> str:
        return enforcement(self.gaps)

    def to_dict(self) -> dict:
        return {"policy": self.policy, "enforced": self.enforced, "unenforced": [g.to_dict() for g in self.gaps]}


# The `Enforced` condition on a policy's status (beside Cilium's `Valid`, pkg/k8s/apis/cilium.io/v2/cnp_types.go:
# NetworkPolicyCondition): True when the datapath enforces all of it, False with the parts it does not.
ENFORCED = "Enforced"
REASON_FULL = "FullyEnforced"
REASON_PARTIAL = "PartiallyEnforced"


def condition(gaps: list[Gap], max_message: int = 1024) -> dict:
    """{type, status, reason, message} of the Enforced condition for a policy with these gaps."""
    if not gaps:
        return {"type": ENFORCED, "status": "True", "reason": REASON_FULL,
                "message": "the datapath enforces every rule of this policy"}
    text = "; ".join(f"{g.path_text}: {g.sentence()}" for g in gaps)
    if len(text) > max_message:
        text = text[:max_message - 1] + "…"
    return {"type": ENFORCED, "status": "False", "reason": REASON_PARTIAL, "message": text}
