"""The policy graph: workload groups (what a rule's endpointSelector selects) and peers as nodes, one edge per
rule item and peer, in the direction traffic flows (an ingress rule: peer -> group; egress: group -> peer).

Every edge knows its policy, section, rule index and file:line, so a renderer (terminal, dot, mermaid, html,
and the live UI later) links each edge to the YAML it comes from. The graph is plain data: `to_dict()` is what
a web page or a test reads.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from ciliumctl.connectivity.inputs import DrawInput, PolicySource
from ciliumctl.policy import model
from ciliumctl.policy.labels import POD_NAMESPACE_LABEL, endpoint_labels, parse_label
from ciliumctl.policy.ports import format_range, icmp_range, port_ranges
from ciliumctl.policy.selectors import (
    IN,
    LabelSet,
    compile_selector,
    knp_peer_selector,
    knp_subject_selector,
    peer_selector,
    selects_init,
    subject_selector,
)

GROUP, ENDPOINTS, ENTITY, CIDR, FQDN, SERVICE, NODES, ANY, NOTHING, INVALID = (
    "group", "endpoints", "entity", "cidr", "fqdn", "service", "nodes", "any", "nothing", "invalid")


@dataclass
class Node:
    id: str                    # stable and unique: what dot/html ids are made of (after escaping)
    kind: str                  # group | endpoints | entity | cidr | fqdn | service | nodes | any | nothing | invalid
    label: str                 # what is shown
    namespace: str = ""        # "" = cluster-wide or not a pod
    labels: list[str] = field(default_factory=list)     # key=value of the selector (for filters)
    members: list[str] = field(default_factory=list)    # existing endpoints it selects: "ns/name"
    findings: list[str] = field(default_factory=list)   # of invalid policies selecting it


@dataclass
class Edge:
    id: str
    src: str                   # node ids, in the direction of traffic
    dst: str
    section: str               # ingress | ingressDeny | egress | egressDeny
    deny: bool
    ports: list[str]           # "80/TCP", "8000-8080/TCP", "ICMP type 8"; [] = every port
    l7: list[str]              # "HTTP GET /v1/.*", "DNS *.example.com", "Kafka topic t"
    policy: str                # policy ref
    rule: str                  # "ingress[0]" (index across the policy's rules, as trace and flows name it)
    where: str                 # file:line of the rule item (origin when not from a file)
    valid: bool = True


@dataclass
class DirectionState:
    default_deny: bool = False
    set_by: list[str] = field(default_factory=list)   # policies that turn default deny on
    also_by: list[str] = field(default_factory=list)  # other policies turning it on for its endpoints (by
                                                      # another selector that selects them too)
    also_on: int = 0                                  # on how many of its endpoints
    edges: list[str] = field(default_factory=list)    # edge ids (rules) of this direction


@dataclass
class Group:
    """A workload group: the endpoints one endpointSelector selects, and the rules about them."""

    node: str
    policies: list[str] = field(default_factory=list)
    ingress: DirectionState = field(default_factory=DirectionState)
    egress: DirectionState = field(default_factory=DirectionState)


@dataclass
class Graph:
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)
    groups: dict[str, Group] = field(default_factory=dict)
    policies: list[PolicySource] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"nodes": [asdict(n) for n in self.nodes.values()], "edges": [asdict(e) for e in self.edges],
                "groups": [asdict(g) for g in self.groups.values()],
                "policies": [{"ref": p.ref, "valid": p.valid, "findings": p.findings, "file": p.file,
                              "origin": p.origin} for p in self.policies]}


# ---------------------------------------------------------------------------------------------- text of parts

def selector_text(sel: model.LabelSelector | None) -> list[str]:
    if sel is None:
        return []
    out = [f"{k}={v}" for k, v in sel.match_labels]
    for e in sel.match_expressions:
        out.append(f"{e.key} {e.operator} ({','.join(e.values)})" if e.values else f"{e.key} {e.operator}")
    return out


def _ports_text(item: model.PeerRule) -> tuple[list[str], list[str]]:
    ports: list[str] = []
    l7: list[str] = []
    for pr in item.to_ports or ():
        if not pr.ports:
            ports.append("any")
        for pp in pr.ports:
            ranges = port_ranges(pp.port, pp.end_port, pp.protocol)
            if ranges is None:
                ports.append(f"{pp.port}/{pp.protocol} (named)")
            elif pp.protocol == "ANY" and pp.port != "0":
                ports.append(f"{pp.port}{'-' + str(pp.end_port) if pp.end_port else ''}/ANY")
            else:
                ports.extend(format_range(r) for r in ranges)
        rules = pr.rules
        if rules is not None:
            for h in rules.http or ():
                l7.append(" ".join(x for x in ("HTTP", h.method or "*", h.path or "/*", h.host) if x))
            for d in rules.dns or ():
                l7.append(f"DNS {d.match_name or d.match_pattern}")
            for k in rules.kafka or ():
                l7.append(" ".join(x for x in ("Kafka", k.role or k.api_key, k.topic) if x))
            if rules.l7proto:
                l7.append(f"{rules.l7proto} ({len(rules.l7 or ())} rules)")
        if pr.server_names:
            l7.append("TLS SNI " + ", ".join(pr.server_names))
    for icmp in item.icmps or ():
        for f in icmp.fields:
            r = icmp_range(f.type, f.family)
            ports.append(format_range(r) if r is not None else f"ICMP {f.type}")
    return ports, l7


class _Builder:
    def __init__(self, inp: DrawInput):
        self.g = Graph(policies=list(inp.policies))
        self.members: list[tuple[str, LabelSet]] = [
            (f"{ep.namespace}/{ep.name}", LabelSet(endpoint_labels(ep, inp.namespace_labels.get(ep.namespace))))
            for ep in inp.endpoints]
        # key -> value -> members having it (any source): a selector's first In requirement picks candidates
        self.by_label: dict[str, dict[str, list[int]]] = {}
        for i, (_, ls) in enumerate(self.members):
            for text in ls.labels:
                lab = parse_label(text)
                self.by_label.setdefault(lab.key, {}).setdefault(lab.value, []).append(i)

    def selected(self, selector) -> list[str]:
        first = next((r for r in selector.requirements if r.op == IN), None)
        if first is None:
            candidates: Iterable[int] = range(len(self.members))
        else:
            values = self.by_label.get(first.key, {})
            candidates = sorted({i for v in first.values for i in values.get(v, ())})
        return [self.members[i][0] for i in candidates if selector.matches(self.members[i][1])]

    def node(self, node_id: str, kind: str, label: str, namespace: str = "", labels: list[str] | None = None,
             selector=None) -> Node:
        n = self.g.nodes.get(node_id)
        if n is None:
            n = self.g.nodes[node_id] = Node(node_id, kind, label, namespace, list(labels or []))
            if selector is not None:
                n.members = self.selected(selector)
        return n

    def group(self, node_id: str) -> Group:
        return self.g.groups.setdefault(node_id, Group(node_id))

    # -- subjects

    def subject(self, src: PolicySource, sel: model.LabelSelector, knp: bool = False, node_rule: bool = False):
        pol = src.policy
        assert pol is not None
        if node_rule:
            comp = compile_selector(sel)
            text = selector_text(sel)
            return self.node(f"nodes:{comp}", NODES, "nodes " + (", ".join(text) or "(all)"), "", text)
        comp = knp_subject_selector(sel, pol.namespace) if knp else subject_selector(sel, pol.namespace)
        text = selector_text(sel)
        ns = pol.namespace or ("(all namespaces)" if not comp.has_key("k8s", POD_NAMESPACE_LABEL) else "")
        label = ", ".join(text) or "(every pod)"
        return self.node(f"group:{comp}", GROUP, f"{label}\n{ns}" if ns else label, pol.namespace, text, comp)

    # -- peers

    def peers(self, pol: model.Policy, item: model.PeerRule, direction: str, matches_init: bool) -> list[Node]:
        out: list[Node] = []
        if not item.has_l3:
            if item.has_l4:
                out.append(self.node("any", ANY, "any peer"))
            else:
                out.append(self.node("nothing", NOTHING, "(selects nothing)"))
            return out
        for sel in item.endpoints or ():
            comp = peer_selector(sel, pol.namespace, matches_init)
            text = selector_text(sel)
            ns_vals = [r for r in comp.requirements if r.key == POD_NAMESPACE_LABEL and r.op == "In"]
            ns = ",".join(sorted(next(iter(ns_vals)).values)) if ns_vals else ""
            shown = ", ".join(t for t in text if not t.startswith(("k8s:" + POD_NAMESPACE_LABEL,
                                                                   POD_NAMESPACE_LABEL))) or "(every pod)"
            label = f"{shown}\n{ns}" if ns else f"{shown}\n(all namespaces)"
            out.append(self.node(f"group:{comp}", GROUP if ns else ENDPOINTS, label, ns, text, comp))
        for ent in item.entities or ():
            out.append(self.node(f"entity:{ent}", ENTITY, f"entity {ent}"))
        for c in item.cidrs or ():
            out.append(self.node(f"cidr:{c}", CIDR, c))
        for cs in item.cidr_sets or ():
            what = cs.cidr or f"CIDR group {cs.cidr_group_ref or ', '.join(selector_text(cs.cidr_group_selector))}"
            label = what + (f"\nexcept {', '.join(cs.except_)}" if cs.except_ else "")
            out.append(self.node(f"cidr:{label}", CIDR, label))
        for f in item.fqdns or ():
            name = f.match_name or f.match_pattern
            out.append(self.node(f"fqdn:{name}", FQDN, name))
        for svc in item.services or ():
            if svc.k8s_service is not None:
                what = f"service {svc.k8s_service.namespace or pol.namespace}/{svc.k8s_service.service_name}"
            else:
                ssel = svc.k8s_service_selector
                what = "services " + (", ".join(selector_text(ssel.selector)) if ssel else "")
            out.append(self.node(f"service:{what}", SERVICE, what))
        for sel in item.nodes or ():
            comp = compile_selector(sel)
            text = selector_text(sel)
            out.append(self.node(f"nodes:{comp}", NODES, "nodes " + (", ".join(text) or "(all)"), "", text))
        for grp in item.groups or ():
            out.append(self.node(f"groups:{sorted(grp)}", CIDR, "groups " + ", ".join(sorted(map(str, grp)))))
        if any(f is not None and len(f) == 0 for f in (item.endpoints, item.entities, item.cidrs, item.cidr_sets,
                                                        item.nodes)) and not out:
            out.append(self.node("nothing", NOTHING, "(selects nothing)"))
        return out

    def add_edges(self, src: PolicySource, subject: Node, peers: list[Node], section: str, index: int, where: str,
                  ports: list[str], l7: list[str]) -> None:
        grp = self.group(subject.id)
        if src.ref not in grp.policies:
            grp.policies.append(src.ref)
        state = grp.ingress if section.startswith("ingress") else grp.egress
        for peer in peers:
            eid = f"e{len(self.g.edges)}"
            a, b = (peer.id, subject.id) if section.startswith("ingress") else (subject.id, peer.id)
            self.g.edges.append(Edge(eid, a, b, section, section.endswith("Deny"), ports, l7, src.ref,
                                     f"{section}[{index}]", where, src.valid))
            state.edges.append(eid)

    def default_deny(self, subject: Node, ref: str, ingress: bool, egress: bool) -> None:
        grp = self.group(subject.id)
        for on, state in ((ingress, grp.ingress), (egress, grp.egress)):
            if on:
                state.default_deny = True
                if ref not in state.set_by:
                    state.set_by.append(ref)

    # -- policies

    def cilium(self, src: PolicySource) -> None:
        pol = src.policy
        assert pol is not None
        counters = dict.fromkeys(model.SECTIONS, 0)
        for rule in pol.rules:
            if rule.endpoint_selector is not None:
                subject = self.subject(src, rule.endpoint_selector)
            elif rule.node_selector is not None:
                subject = self.subject(src, rule.node_selector, node_rule=True)
            else:
                continue
            grp = self.group(subject.id)
            if src.ref not in grp.policies:
                grp.policies.append(src.ref)
            if not src.valid:
                subject.findings.extend(f for f in src.findings if f not in subject.findings)
            init = selects_init(rule.endpoint_selector)
            for section in model.SECTIONS:
                direction = "ingress" if section.startswith("ingress") else "egress"
                for i, item in enumerate(rule.section(section)):
                    index = counters[section]
                    counters[section] += 1
                    ports, l7 = _ports_text(item)
                    self.add_edges(src, subject, self.peers(pol, item, direction, init), section, index,
                                   src.where(rule.path + (section, i)), ports, l7)
            dd = rule.enable_default_deny
            ing = dd.ingress if dd.ingress is not None else bool(rule.ingress) or bool(rule.ingress_deny)
            egr = dd.egress if dd.egress is not None else bool(rule.egress) or bool(rule.egress_deny)
            self.default_deny(subject, src.ref, ing, egr)

    def knp(self, src: PolicySource) -> None:
        pol = src.policy
        assert pol is not None
        spec = pol.network_policy or model.NetworkPolicySpec()
        subject = self.subject(src, spec.pod_selector, knp=True)
        if not src.valid:
            subject.findings.extend(f for f in src.findings if f not in subject.findings)
        grp = self.group(subject.id)
        if src.ref not in grp.policies:
            grp.policies.append(src.ref)
        for section, rules in ((model.INGRESS, spec.ingress), (model.EGRESS, spec.egress)):
            for i, r in enumerate(rules or ()):
                ports = []
                for p in r.ports or ():
                    ranges = port_ranges(p.port or "0", p.end_port, p.protocol or "TCP")
                    ports.extend([format_range(x) for x in ranges] if ranges else [f"{p.port}/{p.protocol} (named)"])
                peers: list[Node] = []
                for peer in r.peers or ():
                    sel = knp_peer_selector(peer.pod_selector, peer.namespace_selector, pol.namespace)
                    if sel is not None:
                        text = selector_text(peer.pod_selector) + [f"ns: {t}" for t in
                                                                   selector_text(peer.namespace_selector)]
                        ns = pol.namespace if peer.namespace_selector is None else ""
                        label = (", ".join(text) or "(every pod)") + f"\n{ns or '(selected namespaces)'}"
                        peers.append(self.node(f"group:{sel}", GROUP if ns else ENDPOINTS, label, ns, text, sel))
                    if peer.ip_block is not None:
                        label = peer.ip_block.cidr + (f"\nexcept {', '.join(peer.ip_block.except_)}"
                                                      if peer.ip_block.except_ else "")
                        peers.append(self.node(f"cidr:{label}", CIDR, label))
                if not r.peers:
                    peers.append(self.node("any", ANY, "any peer"))
                self.add_edges(src, subject, peers, section, i, src.where(("spec", section, i)), ports, [])
        types = set(spec.policy_types)
        self.default_deny(subject, src.ref, bool(spec.ingress) or "Ingress" in types or "Egress" not in types,
                          bool(spec.egress) or "Egress" in types)

    def unparsed(self, src: PolicySource) -> None:
        n = self.node(f"invalid:{src.ref}:{src.file}", INVALID, f"{src.ref}\n(invalid, not drawn)", src.namespace)
        n.findings.extend(src.findings)


def _also_by(g: Graph) -> None:
    """Default deny of a group's endpoints set by groups of other selectors that select them too."""
    for word in ("ingress", "egress"):
        by_member: dict[str, set[str]] = {}
        for gid, grp in g.groups.items():
            state: DirectionState = getattr(grp, word)
            if state.default_deny:
                for m in g.nodes[gid].members:
                    by_member.setdefault(m, set()).update(state.set_by)
        for gid, grp in g.groups.items():
            state = getattr(grp, word)
            others = {m: by_member.get(m, set()) - set(state.set_by) for m in g.nodes[gid].members}
            state.also_by = sorted(set().union(*others.values()))
            state.also_on = sum(1 for refs in others.values() if refs)


def build(inp: DrawInput) -> Graph:
    b = _Builder(inp)
    for src in inp.policies:
        if src.policy is None:
            b.unparsed(src)
        elif src.policy.kind == model.KNP:
            b.knp(src)
        else:
            b.cilium(src)
    _also_by(b.g)
    return b.g
