"""Resolution: endpoints + policies + enforcement mode -> ResolvedState, the value the datapath loads.

A pure function of its inputs (apart from the identity allocator, which hands out stable ids). Semantics follow
Cilium's agent:

- A rule selects an endpoint by its identity labels (endpointSelector, namespace-scoped for CNP); a nodeSelector
  rule (CCNP) selects only the node itself: the host endpoint, id HOST_ENDPOINT_ID (0), produced only when
  `node_labels` is given.
- Enforcement (mode default): a direction is enforced once a selecting rule has a non-empty ingress/ingressDeny
  (egress/egressDeny) section, unless the rule says enableDefaultDeny {ingress|egress: false}; an explicit
  enableDefaultDeny true enforces by itself. A direction that is not default-deny but has deny entries is
  enforced with an allow-all entry (no origins) beside them, so denies still apply. Mode always: every direction
  enforced; mode never: nothing enforced and no entries.
- Peers: from/toEndpoints (label selectors), entities, CIDR/CIDRSet (CIDR identities for every prefix mentioned,
  a rule selects those inside it and not inside an except), from/toNodes (the host, by node labels), toFQDNs
  (the addresses the DNS proxy learned for names the selector matches, `fqdn_ips`: each address's /32 gets the
  node-local identity of its label set, the `fqdn:` labels of every selector matching one of its names plus the
  `cidr:` labels of the rule prefixes containing it (policy.fqdn.learned_labels): addresses selected alike share
  one identity, as in Cilium 1.16+, and CIDR rules still select the addresses inside them). toServices selects
  nothing here (no service watch); fromRequires is ignored.
- rules.dns of egress port rules: per endpoint, the DNS servers, ports and names its queries may ask
  (ResolvedState.dns, for the DNS proxy); their L4 part is an ordinary entry.
- Ports: numbers, ranges (endPort), ANY with a port = TCP+UDP+SCTP, ICMP types; named ports are skipped (no
  container ports known). L7 rules keep only their L3/L4 part.
- What the datapath does not enforce as written comes from policy.enforcement_gaps: one note per gap, and the
  gaps by rule item for trace.
- Allows and denies are both kept (the datapath gives deny precedence); duplicates fold, origins merge.
"""

from __future__ import annotations

import bisect
import gc
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ciliumctl.endpoints.model import Endpoint
from ciliumctl.identity import allocator as ids
from ciliumctl.policy import fqdn, model
from ciliumctl.policy.enforcement_gaps import Gap, HostFirewall, find_gaps
from ciliumctl.policy.labels import (
    CLUSTER_LABEL,
    DEFAULT_CLUSTER,
    SOURCE_K8S,
    SOURCE_RESERVED,
    endpoint_labels,
    node_identity_labels,
)
from ciliumctl.policy.ports import icmp_range, port_ranges
from ciliumctl.policy.resolved import (
    IDENTITY_ANY,
    PROTO_ANY,
    Direction,
    DirectionPolicy,
    DNSAllow,
    EndpointPolicy,
    Enforcement,
    HTTPAllow,
    PolicyEntry,
    PortRange,
    ResolvedState,
    RuleOrigin,
)
from ciliumctl.policy.selectors import (
    EXISTS,
    IN,
    LabelSet,
    Requirement,
    Selector,
    compile_selector,
    knp_peer_selector,
    knp_subject_selector,
    peer_selector,
    selects_init,
    subject_selector,
)

HOST_ENDPOINT_ID = 0
ALL_PORTS = PortRange(PROTO_ANY, 0, 0)
# remote nodes' own identities with --enable-node-selector-labels: Cilium's node-local scope for them
# (pkg/identity/numericidentity.go IdentityScopeRemoteNode = 2 << 24), numbered here per revision
REMOTE_NODE_SCOPE = 2 << 24
UNIVERSE_RESERVED = (ids.HOST, ids.WORLD, ids.UNMANAGED, ids.HEALTH, ids.INIT, ids.REMOTE_NODE,
                     ids.KUBE_APISERVER, ids.INGRESS)


def _reserved(name: str) -> Selector:
    return Selector((Requirement(SOURCE_RESERVED, name, EXISTS),))


ENTITY_SELECTORS: dict[str, tuple[Selector, ...]] = {
    "world": (_reserved("world"), _reserved("world-ipv4"), _reserved("world-ipv6")),
    "world-ipv4": (_reserved("world-ipv4"),),
    "world-ipv6": (_reserved("world-ipv6"),),
    "host": (_reserved("host"),),
    "remote-node": (_reserved("remote-node"),),
    "kube-apiserver": (_reserved("kube-apiserver"),),
    "health": (_reserved("health"),),
    "init": (_reserved("init"),),
    "unmanaged": (_reserved("unmanaged"),),
    "ingress": (_reserved("ingress"),),
    "none": (),
    "cluster": (_reserved("host"), _reserved("remote-node"), _reserved("init"), _reserved("ingress"),
                _reserved("health"), _reserved("unmanaged"), _reserved("kube-apiserver"),
                Selector((Requirement(SOURCE_K8S, CLUSTER_LABEL, IN, frozenset({DEFAULT_CLUSTER})),))),
}


# ----------------------------------------------------------------------------------------------- compiled rules

@dataclass
class _Peers:
    """The L3 part of one rule item, before it meets the identity universe."""

    wildcard: bool = False
    selectors: list[Selector] = field(default_factory=list)
    cidrs: list[tuple[ipaddress._BaseNetwork, tuple[ipaddress._BaseNetwork, ...]]] = field(default_factory=list)
    nodes: list[Selector] = field(default_factory=list)
    fqdns: tuple[fqdn.NameMatch, ...] = ()


@dataclass
class _Item:
    origin: RuleOrigin
    deny: bool
    peers: _Peers
    ports: list[PortRange] | None          # None = every port and protocol
    dns: list[tuple[PortRange, tuple[fqdn.NameMatch, ...]]] = field(default_factory=list)   # rules.dns by port
    http: list[tuple[PortRange, tuple | None]] = field(default_factory=list)   # rules.http by port, None: none


@dataclass
class _Rule:
    policy: model.Policy
    subject: Selector
    node_rule: bool
    default_deny: dict[Direction, bool]
    items: dict[Direction, list[_Item]]
    description: str = ""


@dataclass
class Resolution:
    """resolve() with what trace needs to explain it: which policies selected each endpoint, and notes."""

    state: ResolvedState
    selected_by: dict[tuple[int, Direction], list[str]] = field(default_factory=dict)   # policy refs
    default_deny_by: dict[tuple[int, Direction], list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    notes_by_policy: dict[str, list[str]] = field(default_factory=dict)
    mode: Enforcement = Enforcement.DEFAULT
    gaps: list[Gap] = field(default_factory=list)        # what the datapath does not enforce as written
    gaps_by_origin: dict[RuleOrigin, list[Gap]] = field(default_factory=dict)


class _Notes:
    """Notes in order of appearance, each filed under the policy being compiled (for trace's filtering)."""

    def __init__(self):
        self.items: list[str] = []
        self.by_policy: dict[str, list[str]] = {}
        self.current = ""
        self._seen: set[str] = set()
        self.gaps: list[Gap] = []

    def add(self, text: str) -> None:
        if text not in self._seen:
            self._seen.add(text)
            self.items.append(text)
            self.by_policy.setdefault(self.current, []).append(text)


def _net(text: str, notes: _Notes, where: str):
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        notes.add(f"{where}: {text!r} is not a CIDR; skipped")
        return None


def _ports_of(item: model.PeerRule, where: str, notes: _Notes) -> list[PortRange] | None:
    if not item.has_l4:
        return None
    out: list[PortRange] = []
    for pr in item.to_ports or ():
        if not pr.ports:
            out.append(ALL_PORTS)
            continue
        for pp in pr.ports:
            out.extend(port_ranges(pp.port, pp.end_port, pp.protocol) or ())   # a named port: a gap
    for icmp in item.icmps or ():
        for f in icmp.fields:
            r = icmp_range(f.type, f.family)
            if r is None:
                notes.add(f"{where}: ICMP type {f.type!r} unknown; skipped")
            else:
                out.append(r)
    return out


def _cilium_peers(item: model.PeerRule, namespace: str, matches_init: bool, where: str, notes: _Notes) -> _Peers:
    p = _Peers()
    if not item.has_l3:
        p.wildcard = item.has_l4          # an empty item `{}` selects nothing; L4 only = every peer
        return p
    # an explicitly empty list selects nothing (Cilium: "empty non-nil slices select no identity")
    if any(f is not None and len(f) == 0 for f in (item.endpoints, item.entities, item.cidrs, item.cidr_sets,
                                                    item.nodes)):
        return p
    for sel in item.endpoints or ():
        p.selectors.append(peer_selector(sel, namespace, matches_init))
    for ent in item.entities or ():
        if ent == "all":
            p.wildcard = True
        elif ent in ENTITY_SELECTORS:
            p.selectors.extend(ENTITY_SELECTORS[ent])
        else:
            notes.add(f"{where}: unknown entity {ent!r} selects nothing")
    for c in item.cidrs or ():
        n = _net(c, notes, where)
        if n is not None:
            p.cidrs.append((n, ()))
    for cs in item.cidr_sets or ():
        if not cs.cidr:       # cidrGroupRef / cidrGroupSelector: a gap, selects nothing
            continue
        n = _net(cs.cidr, notes, where)
        if n is None:
            continue
        exc = tuple(e for e in (_net(x, notes, where) for x in cs.except_) if e is not None)
        p.cidrs.append((n, exc))
    for sel in item.nodes or ():
        p.nodes.append(compile_selector(sel))
    p.fqdns = fqdn.of(item.fqdns)
    # toServices, to/fromGroups select nothing and from/toRequires is ignored: gaps
    return p


def _dns_of(item: model.PeerRule) -> list[tuple[PortRange, tuple[fqdn.NameMatch, ...]]]:
    out: list[tuple[PortRange, tuple[fqdn.NameMatch, ...]]] = []
    for pr in item.to_ports or ():
        if pr.rules is None or pr.rules.dns is None:
            continue
        names = fqdn.of(pr.rules.dns)
        ranges = [r for pp in pr.ports for r in (port_ranges(pp.port, pp.end_port, pp.protocol) or ())]
        out.extend((r, names) for r in (ranges if pr.ports else [ALL_PORTS]))
    return out


def _http_of(item: model.PeerRule) -> list[tuple[PortRange, tuple | None]]:
    """Every port of the item with its rules.http (None: the port rule has none): only when one has some."""
    prs = item.to_ports or ()
    if not any(pr.rules is not None and pr.rules.http for pr in prs):
        return []
    out: list[tuple[PortRange, tuple | None]] = []
    for pr in prs:
        http = pr.rules.http if pr.rules is not None and pr.rules.http else None
        ranges = [r for pp in pr.ports for r in (port_ranges(pp.port, pp.end_port, pp.protocol) or ())]
        out.extend((r, http) for r in (ranges if pr.ports else [ALL_PORTS]))
    return out


def _default_deny(rule: model.Rule) -> dict[Direction, bool]:
    dd = rule.enable_default_deny
    ing = dd.ingress if dd.ingress is not None else bool(rule.ingress) or bool(rule.ingress_deny)
    egr = dd.egress if dd.egress is not None else bool(rule.egress) or bool(rule.egress_deny)
    return {Direction.INGRESS: ing, Direction.EGRESS: egr}


_SECTION_DIR = {model.INGRESS: (Direction.INGRESS, False), model.INGRESS_DENY: (Direction.INGRESS, True),
                model.EGRESS: (Direction.EGRESS, False), model.EGRESS_DENY: (Direction.EGRESS, True)}


def _compile_cilium(pol: model.Policy, notes: _Notes) -> list[_Rule]:
    out = []
    counters = dict.fromkeys(model.SECTIONS, 0)
    for rule in pol.rules:
        if rule.endpoint_selector is not None:
            subject = (subject_selector(rule.endpoint_selector, pol.namespace) if pol.kind == model.CNP
                       else compile_selector(rule.endpoint_selector))
            node_rule = False
        elif rule.node_selector is not None:
            subject, node_rule = compile_selector(rule.node_selector), True
        else:
            notes.add(f"{pol.ref}: a rule without endpointSelector or nodeSelector selects nothing")
            continue
        matches_init = selects_init(rule.endpoint_selector)
        items: dict[Direction, list[_Item]] = {Direction.INGRESS: [], Direction.EGRESS: []}
        for section in model.SECTIONS:
            direction, deny = _SECTION_DIR[section]
            for item in rule.section(section):
                origin = RuleOrigin(pol.kind, pol.name, pol.namespace, section, counters[section])
                counters[section] += 1
                where = f"{pol.ref} {section}[{origin.index}]"
                items[direction].append(_Item(origin, deny,
                                              _cilium_peers(item, pol.namespace, matches_init, where, notes),
                                              _ports_of(item, where, notes),
                                              _dns_of(item) if section == model.EGRESS else [],
                                              _http_of(item) if not deny else []))
        out.append(_Rule(pol, subject, node_rule, _default_deny(rule), items, rule.description))
    return out


def _knp_ports(ports) -> list[PortRange] | None:
    if not ports:
        return None
    out: list[PortRange] = []
    for p in ports:
        out.extend(port_ranges(p.port or "0", p.end_port, p.protocol or "TCP") or ())   # a named port: a gap
    return out


def _compile_knp(pol: model.Policy, notes: _Notes) -> list[_Rule]:
    spec = pol.network_policy or model.NetworkPolicySpec()
    items: dict[Direction, list[_Item]] = {Direction.INGRESS: [], Direction.EGRESS: []}
    for direction, rules, section in ((Direction.INGRESS, spec.ingress, model.INGRESS),
                                      (Direction.EGRESS, spec.egress, model.EGRESS)):
        for i, r in enumerate(rules or ()):
            origin = RuleOrigin(pol.kind, pol.name, pol.namespace, section, i)
            where = f"{pol.ref} {section}[{i}]"
            ports = _knp_ports(r.ports)
            if not r.peers:   # no from/to: every peer
                items[direction].append(_Item(origin, False, _Peers(wildcard=True), ports))
                continue
            for peer in r.peers:
                p = _Peers()
                sel = knp_peer_selector(peer.pod_selector, peer.namespace_selector, pol.namespace)
                if sel is not None:
                    p.selectors.append(sel)
                if peer.ip_block is not None:
                    n = _net(peer.ip_block.cidr, notes, where)
                    if n is not None:
                        exc = tuple(e for e in (_net(x, notes, where) for x in peer.ip_block.except_)
                                    if e is not None)
                        p.cidrs.append((n, exc))
                if sel is None and peer.ip_block is None:
                    p.wildcard = ports is not None
                items[direction].append(_Item(origin, False, p, ports))
    types = set(spec.policy_types)
    dd = {Direction.INGRESS: bool(spec.ingress) or "Ingress" in types or "Egress" not in types,
          Direction.EGRESS: bool(spec.egress) or "Egress" in types}
    return [_Rule(pol, knp_subject_selector(spec.pod_selector, pol.namespace), False, dd, items)]


def _as_policy(p) -> model.Policy:
    if isinstance(p, model.Policy):
        return p
    data = getattr(p, "data", p)           # a store.StoredPolicy or a load.Document
    if isinstance(data, Mapping):
        return model.parse_policy(data)
    raise TypeError(f"not a policy: {type(p).__name__}")


def compile_policies(policies: Iterable, notes: _Notes, host: HostFirewall | None = None) -> list[_Rule]:
    rules: list[_Rule] = []
    for p in policies:
        pol = _as_policy(p)
        notes.current = pol.ref
        for gap in find_gaps(pol, host):
            notes.gaps.append(gap)
            notes.add(gap.note())
        rules.extend(_compile_knp(pol, notes) if pol.kind == model.KNP else _compile_cilium(pol, notes))
    return rules


# ----------------------------------------------------------------------------------------------- the universe

class _Universe:
    """Every identity the rules can select, indexed for selection: label sets for selectors, CIDR identities
    sorted by address for CIDR rules."""

    def __init__(self, labels: dict[int, LabelSet], cidr_nets: dict[int, ipaddress._BaseNetwork]):
        self.labels = labels
        self.cidr_nets = cidr_nets
        self._plain = {i: ls for i, ls in labels.items() if i not in cidr_nets}
        # CIDR identities differ only in their cidr: label; a selector not naming cidr: labels treats all alike
        self._cidr_like = LabelSet({"reserved:world"})
        self._by_version: dict[int, tuple[list[tuple[int, int]], list[tuple[int, int, int]]]] = {}
        for ident, net in cidr_nets.items():
            keys, rows = self._by_version.setdefault(net.version, ([], []))
            rows.append((int(net.network_address), int(net.broadcast_address), ident))
        for keys, rows in self._by_version.values():
            rows.sort()
            keys.extend((lo, hi) for lo, hi, _ in rows)
        self._sel_cache: dict[Selector, frozenset[int]] = {}
        self._remote_nodes = [i for i in labels if REMOTE_NODE_SCOPE <= i < REMOTE_NODE_SCOPE + (1 << 24)]
        # learned addresses' identities (fqdn: labels): selected by their fqdn: labels, and by CIDR rules through
        # the cidr: labels of the rule prefixes containing them
        self._by_fqdn: dict[str, set[int]] = {}
        self._learned_cidr: dict[str, set[int]] = {}
        self._learned: set[int] = set()
        for ident, ls in labels.items():
            if ident in cidr_nets or not any(lbl.startswith(fqdn.LABEL_SOURCE + ":") for lbl in ls.labels):
                continue
            self._learned.add(ident)
            for lbl in ls.labels:
                if lbl.startswith(fqdn.LABEL_SOURCE + ":"):
                    self._by_fqdn.setdefault(lbl, set()).add(ident)
                elif lbl.startswith("cidr:"):
                    self._learned_cidr.setdefault(lbl, set()).add(ident)

    def _select_labels(self, sel: Selector) -> frozenset[int]:
        hit = self._sel_cache.get(sel)
        if hit is None:
            out = {i for i, ls in self._plain.items() if sel.matches(ls)}
            if self.cidr_nets:
                if any(r.source == "cidr" for r in sel.requirements):
                    out.update(i for i in self.cidr_nets if sel.matches(self.labels[i]))
                elif sel.matches(self._cidr_like):
                    out.update(self.cidr_nets)
            hit = self._sel_cache[sel] = frozenset(out)
        return hit

    def _inside(self, net) -> list[int]:
        """Every CIDR identity whose prefix lies inside net."""
        if net.version not in self._by_version:
            return []
        keys, rows = self._by_version[net.version]
        lo, hi = int(net.network_address), int(net.broadcast_address)
        start = bisect.bisect_left(keys, (lo, -1))
        out: list[int] = []
        for k in range(start, len(rows)):
            a, b, ident = rows[k]
            if a > hi:
                break
            if b <= hi:
                out.append(ident)
        return out

    def select(self, peers: _Peers, host_selectable: bool) -> set[int] | None:
        """Identities a peer spec selects; None = every identity (IDENTITY_ANY)."""
        if peers.wildcard:
            return None
        out: set[int] = set()
        for sel in peers.selectors:
            if sel.is_wildcard:
                return None
            out.update(self._select_labels(sel))
        for net, excepts in peers.cidrs:
            if net.prefixlen == 0:
                out.add(ids.WORLD)
            excluded = {i for e in excepts for i in self._inside(e)}
            excluded.update(i for e in excepts for i in self._learned_cidr.get(f"cidr:{e.with_prefixlen}", ()))
            out.update(i for i in self._inside(net) if i not in excluded)
            inside = self._learned if net.prefixlen == 0 else self._learned_cidr.get(f"cidr:{net.with_prefixlen}", ())
            out.update(i for i in inside if i not in excluded)
        for nm in peers.fqdns:
            out.update(self._by_fqdn.get(nm.label, ()))
        for sel in peers.nodes:
            if host_selectable and sel.matches(self.labels[ids.HOST]):
                out.add(ids.HOST)
            if sel.is_wildcard:
                out.add(ids.REMOTE_NODE)
            # other nodes' own identities (--enable-node-selector-labels): by their node: labels
            out.update(i for i in self._remote_nodes if sel.matches(self.labels[i]))
        return out


def _all_cidrs(rules: list[_Rule]) -> set[ipaddress._BaseNetwork]:
    out = set()
    for r in rules:
        for items in r.items.values():
            for it in items:
                for net, exc in it.peers.cidrs:
                    out.add(net)
                    out.update(exc)
    return {n for n in out if n.prefixlen > 0}


# ----------------------------------------------------------------------------------------------- resolve

def resolve_detailed(endpoints: list[Endpoint], policies: Iterable, mode: Enforcement | str,
                     allocator: ids.IdentityBackend, revision: int = 0, audit: bool = False,
                     node_labels: Mapping[str, str] | None = None, *,
                     namespace_labels: Mapping[str, Mapping[str, str]] | None = None,
                     host_ips: Iterable[str] = (), allow_localhost: bool = False,
                     fqdn_ips: Mapping[str, Iterable[str]] | None = None,
                     host: HostFirewall | None = None, remote_nodes: Iterable[str] = (),
                     kube_apiserver: Iterable[str] = (),
                     remote_node_labels: Mapping[str, Mapping[str, str]] | None = None) -> Resolution:
    # many small acyclic objects: the cyclic GC only costs time here (~1/3 of a 10k-rule resolve)
    paused = gc.isenabled()
    gc.disable()
    try:
        return _resolve(endpoints, policies, mode, allocator, revision, audit, node_labels, namespace_labels,
                        host_ips, allow_localhost, fqdn_ips, host, remote_nodes, kube_apiserver,
                        remote_node_labels)
    finally:
        if paused:
            gc.enable()


def _resolve(endpoints, policies, mode, allocator, revision, audit, node_labels, namespace_labels, host_ips,
             allow_localhost, fqdn_ips, host=None, remote_nodes=(), kube_apiserver=(),
             remote_node_labels=None) -> Resolution:
    mode = Enforcement(mode)
    notes = _Notes()
    rules = compile_policies(policies, notes, host)

    # identities: endpoints by their security labels, CIDR prefixes mentioned by any rule
    ep_labels = [endpoint_labels(ep, (namespace_labels or {}).get(ep.namespace)) for ep in endpoints]
    rule_cidrs = _all_cidrs(rules)
    cidrs = sorted(rule_cidrs, key=lambda n: (n.version, n.network_address, n.prefixlen))
    cidr_labels = [frozenset({f"cidr:{n.with_prefixlen}", "reserved:world"}) for n in cidrs]
    prefixes = fqdn.RulePrefixes(n.with_prefixlen for n in cidrs)
    learned = _learned(rules, fqdn_ips or {}, prefixes)
    # every selector's own label set has its identity (and so its policy entries) before any address is learned:
    # the first address a lone selector selects then needs only its ipcache entry (node.dns_proxy.policy, in place)
    alone = {frozenset({nm.label, "reserved:world"}) for nm in _fqdn_selectors(rules)}
    learned_sets = sorted(set(learned.values()) | alone, key=sorted)
    wanted = ep_labels + cidr_labels + learned_sets
    allocated = allocator.allocate_many(wanted) if wanted else []
    ep_ids, cidr_ids = allocated[:len(ep_labels)], allocated[len(ep_labels):len(ep_labels) + len(cidr_labels)]
    learned_ids = dict(zip(learned_sets, allocated[len(ep_labels) + len(cidr_labels):]))

    identities: dict[int, frozenset[str]] = {i: ids.reserved_labels(i) for i in UNIVERSE_RESERVED}
    # the API server's addresses: one of the node's stays host, whose labels gain reserved:kube-apiserver; one of
    # another node's is kube-apiserver (7) and still remote-node to selectors; any other kube-apiserver (Cilium's
    # pkg/identity/cache LookupReservedIdentityByLabels)
    remote_nets = [ipaddress.ip_network(n, strict=False) for n in remote_nodes]
    host_set = set(host_ips)
    api_ips = sorted(set(kube_apiserver) - host_set)
    host_labels = _host_labels(node_labels, host_set, kube_apiserver)
    # --enable-node-selector-labels: each other node's address has an identity of its labels (Cilium's
    # nodeIdentityLabels: reserved:remote-node, node:<label>, the cluster label; with the API server's label when
    # it runs there), which fromNodes/toNodes select; nodes with the same labels share one
    node_sets: dict[str, frozenset[str]] = {}
    for prefix, labels in (remote_node_labels or {}).items():
        node_set = {"reserved:remote-node", f"k8s:{CLUSTER_LABEL}={DEFAULT_CLUSTER}"}
        node_set.update(f"node:{k}={v}" for k, v in labels.items())
        net = ipaddress.ip_network(prefix, strict=False)
        if any(ipaddress.ip_address(ip) in net for ip in api_ips):
            node_set.add("reserved:kube-apiserver")
            api_ips = [ip for ip in api_ips if ipaddress.ip_address(ip) not in net]
        node_sets[net.with_prefixlen] = frozenset(node_set)
    node_ids = {ls: REMOTE_NODE_SCOPE + n for n, ls in enumerate(sorted(set(node_sets.values()), key=sorted), 1)}
    if any(ipaddress.ip_address(ip) in n for ip in api_ips for n in remote_nets):
        identities[ids.KUBE_APISERVER] = identities[ids.KUBE_APISERVER] | {"reserved:remote-node"}
    identities[ids.HOST] = host_labels
    identities.update((i, nls) for nls, i in node_ids.items())
    identities.update(zip(ep_ids, ep_labels))
    identities.update(zip(cidr_ids, cidr_labels))
    identities.update((i, ls) for ls, i in learned_ids.items())
    universe = _Universe({i: LabelSet(ls) for i, ls in identities.items()}, dict(zip(cidr_ids, cidrs)))

    ipcache: dict[str, int] = {"0.0.0.0/0": ids.WORLD}
    for n, i in zip(cidrs, cidr_ids):
        ipcache[n.with_prefixlen] = i
    for ip, ls in learned.items():
        ipcache[f"{ip}/32"] = learned_ids[ls]
    for ip in host_ips:
        ipcache[f"{ip}/32"] = ids.HOST
    for ep, i in zip(endpoints, ep_ids):
        if ep.ipv4:
            ipcache[f"{ep.ipv4.split('/')[0]}/32"] = i
    for ip in api_ips:
        ipcache.setdefault(f"{ip}/32", ids.KUBE_APISERVER)
    for prefix, node_labels_set in node_sets.items():
        ipcache.setdefault(prefix, node_ids[node_labels_set])
    for net in remote_nets:
        ipcache.setdefault(net.with_prefixlen, ids.REMOTE_NODE)

    subjects: list[tuple[int, int, LabelSet, bool]] = [
        (ep.id, i, universe.labels[i], False) for ep, i in zip(endpoints, ep_ids)]
    if node_labels is not None:
        subjects.append((HOST_ENDPOINT_ID, ids.HOST, universe.labels[ids.HOST], True))

    res = Resolution(ResolvedState(revision=revision, identities=identities, ipcache=ipcache, endpoints={},
                                   audit=audit, fqdn_selectors=_fqdn_selectors(rules),
                                   fqdn_prefixes=tuple(prefixes.texts)), mode=mode)
    peer_cache: dict[int, set[int] | None] = {}
    # endpoints with one identity get one policy: compute it once per identity
    by_identity: dict[tuple[int, bool], tuple[dict, dict, dict]] = {}
    subject_cache: dict[tuple[Selector, int], bool] = {}
    selecting_by: dict[int, list[_Rule]] = {}
    dns_by_identity: dict[int, list[DNSAllow]] = {}
    for ep_id, ident, labels, is_host in subjects:
        done = by_identity.get((ident, is_host))
        if done is None:
            selecting = []
            for r in rules:
                if r.node_rule != is_host:
                    continue
                key = (r.subject, ident)
                hit = subject_cache.get(key)
                if hit is None:
                    hit = subject_cache[key] = r.subject.matches(labels)
                if hit:
                    selecting.append(r)
            dirs, refs, dd_refs = {}, {}, {}
            for d in (Direction.INGRESS, Direction.EGRESS):
                refs[d] = sorted({r.policy.ref for r in selecting if r.items[d] or r.default_deny[d]})
                dd_refs[d] = sorted({r.policy.ref for r in selecting if r.default_deny[d]})
                dirs[d] = _direction(selecting, d, mode, bool(dd_refs[d]), universe, peer_cache,
                                     allow_localhost and d == Direction.INGRESS and not is_host)
            done = by_identity[(ident, is_host)] = (dirs, refs, dd_refs)
            selecting_by[ident] = selecting
        dirs, refs, dd_refs = done
        for d in (Direction.INGRESS, Direction.EGRESS):
            res.selected_by[(ep_id, d)] = refs[d]
            res.default_deny_by[(ep_id, d)] = dd_refs[d]
        res.state.endpoints[ep_id] = EndpointPolicy(
            ep_id, ident, *(DirectionPolicy(dirs[d].enforced, list(dirs[d].entries))
                            for d in (Direction.INGRESS, Direction.EGRESS)))
        if dirs[Direction.EGRESS].enforced and not is_host:
            allows = dns_by_identity.get(ident)
            if allows is None:
                allows = dns_by_identity[ident] = _dns_allows(selecting_by[ident], universe, peer_cache)
            if allows:
                res.state.dns[ep_id] = allows
        for d in (Direction.INGRESS, Direction.EGRESS):
            if dirs[d].enforced and not is_host:
                http = _http_allows(selecting_by[ident], d, universe, peer_cache)
                if http:
                    res.state.http[(ep_id, int(d))] = http
    res.notes = notes.items
    res.notes_by_policy = notes.by_policy
    res.gaps = notes.gaps
    for gap in notes.gaps:
        if gap.origin is not None:
            res.gaps_by_origin.setdefault(gap.origin, []).append(gap)
    return res


def _host_labels(node_labels: Mapping[str, str] | None, host_ips: set[str],
                 kube_apiserver: Iterable[str]) -> frozenset[str]:
    """The host's identity labels: its node labels, and reserved:kube-apiserver when the API server is one of its
    addresses."""
    labels = node_identity_labels(node_labels)
    if set(kube_apiserver) & host_ips:
        labels = labels | {"reserved:kube-apiserver"}
    return labels


# ----------------------------------------------------------------------------------- learned addresses alone

@dataclass
class LearnedPolicy:
    """What resolve() gives the identities of some learned addresses (resolve_learned), and nothing else."""

    identities: dict[int, frozenset[str]] = field(default_factory=dict)   # the addresses' identities: labels
    ipcache: dict[str, int] = field(default_factory=dict)                 # the addresses' /32s
    endpoint_identities: dict[int, int] = field(default_factory=dict)     # every endpoint's (the host's: id 0)
    # the policy entries naming those identities, per (endpoint id, direction), where there are some
    entries: dict[tuple[int, Direction], list[PolicyEntry]] = field(default_factory=dict)
    # rules.dns and rules.http naming them (resolve() lists these only for enforced directions; here: all)
    dns: dict[int, list[DNSAllow]] = field(default_factory=dict)
    http: dict[tuple[int, int], list[HTTPAllow]] = field(default_factory=dict)


def resolve_learned(endpoints: list[Endpoint], policies: Iterable, mode: Enforcement | str,
                    allocator: ids.IdentityBackend, fqdn_ips: Mapping[str, Iterable[str]],
                    node_labels: Mapping[str, str] | None = None, *,
                    namespace_labels: Mapping[str, Mapping[str, str]] | None = None, host_ips: Iterable[str] = (),
                    allow_localhost: bool = False, host: HostFirewall | None = None,
                    kube_apiserver: Iterable[str] = (), remote_nodes: Iterable[str] = (),
                    remote_node_labels: Mapping[str, Mapping[str, str]] | None = None) -> LearnedPolicy:
    """resolve() for learned addresses alone: the identities of `fqdn_ips` (address -> names) and the policy
    entries they take part in as peers of the endpoints' rules, as resolve() with the same inputs gives them
    (tests/unit/test_resolve_learned.py), without the rest of the node's policy: a new label set's cost between a
    DNS answer and the map (node.dns_proxy). The inputs are resolve()'s; the other nodes' (remote_nodes,
    remote_node_labels) decide nothing about a learned address. Identities are allocated as resolve() allocates
    them, so an address gets the number a later resolve() gives it."""
    del remote_nodes, remote_node_labels
    mode = Enforcement(mode)
    rules = compile_policies(policies, _Notes(), host)
    ep_labels = [endpoint_labels(ep, (namespace_labels or {}).get(ep.namespace)) for ep in endpoints]
    cidrs = sorted(_all_cidrs(rules), key=lambda n: (n.version, n.network_address, n.prefixlen))
    cidr_labels = [frozenset({f"cidr:{n.with_prefixlen}", "reserved:world"}) for n in cidrs]
    learned = _learned(rules, fqdn_ips, fqdn.RulePrefixes(n.with_prefixlen for n in cidrs))
    alone = {frozenset({nm.label, "reserved:world"}) for nm in _fqdn_selectors(rules)}
    learned_sets = sorted(set(learned.values()) | alone, key=sorted)
    allocated = allocator.allocate_many(ep_labels + cidr_labels + learned_sets)
    set_ids = dict(zip(learned_sets, allocated[len(ep_labels) + len(cidr_labels):]))
    out = LearnedPolicy(identities={set_ids[ls]: ls for ls in set(learned.values())})
    wanted = set(out.identities)
    # an endpoint's or the host's own address keeps its identity in resolve()'s ipcache
    host_set = set(host_ips)
    own = host_set | {ep.ipv4.split("/")[0] for ep in endpoints if ep.ipv4}
    out.ipcache = {f"{ip}/32": set_ids[ls] for ip, ls in learned.items() if ip not in own}

    host_labels = _host_labels(node_labels, host_set, kube_apiserver)
    # the learned identities are all a rule item's peers are matched against (and the host, for from/toNodes)
    universe = _Universe({**{i: LabelSet(ls) for i, ls in out.identities.items()}, ids.HOST: LabelSet(host_labels)},
                         {})
    subjects = [(ep.id, i, LabelSet(ls), False) for ep, i, ls in zip(endpoints, allocated, ep_labels)]
    if node_labels is not None:
        subjects.append((HOST_ENDPOINT_ID, ids.HOST, universe.labels[ids.HOST], True))
    peer_cache: dict[int, set[int] | None] = {}
    by_identity: dict[tuple[int, bool], tuple] = {}
    for ep_id, ident, labels, is_host in subjects:
        out.endpoint_identities[ep_id] = ident
        done = by_identity.get((ident, is_host))
        if done is None:
            selecting = [r for r in rules if r.node_rule == is_host and r.subject.matches(labels)]
            entries: dict[Direction, list[PolicyEntry]] = {}
            http: dict[Direction, list[HTTPAllow]] = {}
            for d in (Direction.INGRESS, Direction.EGRESS):
                pol = _direction(selecting, d, mode, any(r.default_deny[d] for r in selecting), universe,
                                 peer_cache, allow_localhost and d == Direction.INGRESS and not is_host)
                entries[d] = [e for e in pol.entries if e.identity in wanted]
                http[d] = [] if is_host else [a for a in _http_allows(selecting, d, universe, peer_cache)
                                              if a.identity in wanted]
            dns = [] if is_host else [a for a in _dns_allows(selecting, universe, peer_cache) if a.identity in wanted]
            done = by_identity[(ident, is_host)] = (entries, dns, http)
        entries, dns, http = done
        out.entries.update(((ep_id, d), e) for d, e in entries.items() if e)
        if dns:
            out.dns[ep_id] = dns
        out.http.update(((ep_id, int(d)), a) for d, a in http.items() if a)
    return out


def _fqdn_selectors(rules: list[_Rule]) -> tuple[fqdn.NameMatch, ...]:
    return tuple(sorted({nm for r in rules for it in r.items[Direction.EGRESS] if not it.deny
                         for nm in it.peers.fqdns}))


def _learned(rules: list[_Rule], fqdn_ips: Mapping[str, Iterable[str]],
             prefixes: fqdn.RulePrefixes) -> dict[str, frozenset[str]]:
    """Learned IPv4 address -> its identity labels (fqdn.learned_labels); addresses no selector wants are left
    out (Cilium keeps in the ipcache only what a selector selects)."""
    selectors = _fqdn_selectors(rules)
    out: dict[str, frozenset[str]] = {}
    if not selectors:
        return out
    for ip, names in fqdn_ips.items():
        try:
            if ipaddress.ip_address(ip).version != 4:
                continue           # the datapath is IPv4-only
        except ValueError:
            continue
        labels = fqdn.learned_labels(ip, names, selectors, prefixes)
        if labels is not None:
            out[ip] = labels
    return out


def _dns_allows(selecting: list[_Rule], universe: _Universe, peer_cache: dict) -> list[DNSAllow]:
    folded: dict[tuple[int, PortRange], tuple[set, set]] = {}
    for r in selecting:
        for it in r.items[Direction.EGRESS]:
            if not it.dns or it.deny:
                continue
            key = id(it)
            if key not in peer_cache:
                peer_cache[key] = universe.select(it.peers, host_selectable=True)
            peers = peer_cache[key]
            for ident in ([IDENTITY_ANY] if peers is None else sorted(peers)):
                for pr, names in it.dns:
                    got = folded.setdefault((ident, pr), (set(), set()))
                    got[0].update(names)
                    got[1].add(it.origin)
    return [DNSAllow(ident, pr, tuple(sorted(names)), tuple(sorted(origins)))
            for (ident, pr), (names, origins) in sorted(folded.items())]


def _http_allows(selecting: list[_Rule], d: Direction, universe: _Universe, peer_cache: dict) -> list[HTTPAllow]:
    """rules.http of a direction per (peer, port); a port that some item allows without HTTP rules: every request."""
    folded: dict[tuple[int, PortRange], tuple[set, set]] = {}
    plain: set[tuple[int, PortRange]] = set()
    has_http = any(it.http for r in selecting for it in r.items[d])
    if not has_http:
        return []
    for r in selecting:
        for it in r.items[d]:
            if it.deny:
                continue
            key = id(it)
            if key not in peer_cache:
                peer_cache[key] = universe.select(it.peers, host_selectable=True)
            peers = peer_cache[key]
            ports = it.http or [(pr, None) for pr in (it.ports if it.ports is not None else [ALL_PORTS])]
            for ident in ([IDENTITY_ANY] if peers is None else sorted(peers)):
                for pr, rules in ports:
                    if rules is None:
                        plain.add((ident, pr))
                        continue
                    got = folded.setdefault((ident, pr), (set(), set()))
                    got[0].update(rules)
                    got[1].add(it.origin)
    return [HTTPAllow(ident, pr, () if (ident, pr) in plain else tuple(sorted(rules, key=repr)),
                      tuple(sorted(origins)))
            for (ident, pr), (rules, origins) in sorted(folded.items())]


def _direction(selecting: list[_Rule], d: Direction, mode: Enforcement, default_deny: bool, universe: _Universe,
               peer_cache: dict, allow_localhost: bool) -> DirectionPolicy:
    if mode == Enforcement.NEVER:
        return DirectionPolicy(enforced=False)
    folded: dict[tuple[int, PortRange, bool], set[RuleOrigin]] = {}
    for r in selecting:
        for it in r.items[d]:
            key = id(it)
            if key not in peer_cache:
                peer_cache[key] = universe.select(it.peers, host_selectable=True)
            peers = peer_cache[key]
            idents = [IDENTITY_ANY] if peers is None else sorted(peers)
            for ident in idents:
                for pr in (it.ports if it.ports is not None else [ALL_PORTS]):
                    folded.setdefault((ident, pr, it.deny), set()).add(it.origin)
    entries = [PolicyEntry(ident, pr, deny, tuple(sorted(origins)))
               for (ident, pr, deny), origins in sorted(folded.items(), key=lambda kv: kv[0])]
    has_deny = any(e.deny for e in entries)
    if mode == Enforcement.ALWAYS or default_deny:
        enforced = True
    elif has_deny:
        # not default-deny, but denies must still apply: enforce with an allow-all beside them
        enforced = True
        if not any(e.identity == IDENTITY_ANY and e.ports == ALL_PORTS and not e.deny for e in entries):
            entries.append(PolicyEntry(IDENTITY_ANY, ALL_PORTS, False, ()))
    else:
        enforced = False
    if enforced and allow_localhost and not any(e.identity == ids.HOST and e.ports == ALL_PORTS and not e.deny
                                                for e in entries):
        entries.append(PolicyEntry(ids.HOST, ALL_PORTS, False, ()))
    return DirectionPolicy(enforced=enforced, entries=entries)


def resolve(endpoints: list[Endpoint], policies: Iterable, mode: Enforcement | str, allocator: ids.IdentityBackend,
            revision: int = 0, audit: bool = False, node_labels: Mapping[str, str] | None = None, *,
            namespace_labels: Mapping[str, Mapping[str, str]] | None = None, host_ips: Iterable[str] = (),
            allow_localhost: bool = False, fqdn_ips: Mapping[str, Iterable[str]] | None = None,
            host: HostFirewall | None = None, remote_nodes: Iterable[str] = (),
            kube_apiserver: Iterable[str] = (),
            remote_node_labels: Mapping[str, Mapping[str, str]] | None = None) -> ResolvedState:
    """Endpoints + policies (model.Policy, plain policy dicts, or objects with .data) -> ResolvedState.

    node_labels: produce the host endpoint (id 0, identity 1) for nodeSelector rules. namespace_labels:
    namespace -> its labels (selectable as k8s:io.cilium.k8s.namespace.labels.<key>). host_ips: addresses of
    the node, put in the ipcache as the host identity. allow_localhost: the host may always reach endpoints
    (Cilium's allow-localhost=always). fqdn_ips: address -> the DNS names it was learned for (the DNS proxy's
    cache), what toFQDNs selects. host: the node runs the host firewall (what it enforces, for the notes).
    remote_nodes: the other nodes' prefixes (remote-node, 6). kube_apiserver: the API server's addresses
    (kube-apiserver, 7; host when one is the node's). remote_node_labels: other node's prefix -> its labels
    (--enable-node-selector-labels: each gets an identity of its labels instead of remote-node, 6)."""
    return resolve_detailed(endpoints, policies, mode, allocator, revision, audit, node_labels,
                            namespace_labels=namespace_labels, host_ips=host_ips,
                            allow_localhost=allow_localhost, fqdn_ips=fqdn_ips, host=host,
                            remote_nodes=remote_nodes, kube_apiserver=kube_apiserver,
                            remote_node_labels=remote_node_labels).state
