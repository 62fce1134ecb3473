"""`policy trace`: the what-if verdict for one connection, built on resolve() (the same ResolvedState the
datapath loads), looked up the way the datapath looks it up: entries matching the peer identity or any peer and
the port; a matching deny wins, then a matching allow; nothing matching in an enforced direction = default deny.

The source's egress side and the destination's ingress side are judged separately; the connection is allowed
when both allow it. A side that is not an endpoint (a world IP, a reserved identity without a host endpoint) has
no policy of its own and is reported as not applicable.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

from ciliumctl.base.errors import UsageError
from ciliumctl.endpoints.model import Endpoint
from ciliumctl.identity import allocator as ids
from ciliumctl.policy import model, re2
from ciliumctl.policy.enforcement_gaps import TRACE_TEXT, HostFirewall
from ciliumctl.policy.labels import POD_NAMESPACE_LABEL, SOURCE_ANY, SOURCE_K8S, SOURCE_RESERVED, Label
from ciliumctl.policy.ports import PROTOCOL_NAMES, covers
from ciliumctl.policy.resolve import HOST_ENDPOINT_ID, Resolution, resolve_detailed
from ciliumctl.policy.resolved import IDENTITY_ANY, Direction, DirectionPolicy, Enforcement, PolicyEntry, RuleOrigin
from ciliumctl.services.model import ServiceTable, translate


@dataclass
class Peer:
    """One side of the traced connection as given by the user."""

    labels: list[Label] = field(default_factory=list)
    namespace: str | None = None
    ip: str | None = None

    @property
    def given(self) -> bool:
        return bool(self.labels) or self.namespace is not None or bool(self.ip)


@dataclass
class Side:
    """The verdict of one side (source egress or destination ingress)."""

    applies: bool
    allowed: bool
    reason: str
    kind: str                      # not-an-endpoint | not-enforced | allowed | explicit-deny | default-deny
    origins: list[RuleOrigin] = field(default_factory=list)
    unenforced: list[str] = field(default_factory=list)   # where the datapath decides otherwise (enforcement_gaps)


@dataclass(frozen=True)
class HTTPRequest:
    """The request of an L7 trace (--http-method, --http-path)."""

    method: str
    path: str


@dataclass
class Subject:
    identity: int
    labels: list[str]
    namespace: str
    ip: str
    endpoint_id: int | None        # None: not an endpoint (world, CIDR, reserved without host endpoint)
    description: str


@dataclass
class TraceResult:
    source: Subject
    destination: Subject
    protocol: int
    port: int
    mode: Enforcement
    egress: Side
    ingress: Side
    notes: list[str]
    audit: bool = False
    service: dict | None = None    # the destination was a service frontend: its translation (as the datapath does)
    http: HTTPRequest | None = None

    @property
    def allowed(self) -> bool:
        return self.egress.allowed and self.ingress.allowed

    def to_dict(self) -> dict:
        def side(s: Side) -> dict:
            return {"applies": s.applies, "verdict": "allowed" if s.allowed else "denied", "kind": s.kind,
                    "reason": s.reason, "policies": [asdict(o) for o in s.origins], "unenforced": s.unenforced}

        return {"source": asdict(self.source), "destination": asdict(self.destination),
                "protocol": PROTOCOL_NAMES.get(self.protocol, str(self.protocol)), "port": self.port,
                "mode": self.mode.value, "audit": self.audit,
                "egress": side(self.egress), "ingress": side(self.ingress),
                "verdict": "allowed" if self.allowed else "denied", "notes": self.notes,
                **({"service": self.service} if self.service is not None else {}),
                **({"http": asdict(self.http)} if self.http is not None else {})}


def origin_text(o: RuleOrigin) -> str:
    where = f"{o.namespace}/{o.name}" if o.namespace else o.name
    return f"{o.kind} {where} rule {o.section}[{o.index}]"


def _origins_text(origins: Iterable[RuleOrigin]) -> str:
    return ", ".join(origin_text(o) for o in origins)


def lpm_identity(ipcache: Mapping[str, int], ip: str) -> int:
    """The identity the datapath's ipcache gives an address (longest prefix match; world when none)."""
    addr = ipaddress.ip_address(ip)
    best, best_len = ids.WORLD, -1
    for prefix, ident in ipcache.items():
        net = ipaddress.ip_network(prefix, strict=False)
        if net.version == addr.version and addr in net and net.prefixlen > best_len:
            best, best_len = ident, net.prefixlen
    return best


def judge(dp: DirectionPolicy, peer: int, proto: int, port: int) -> tuple[str, list[PolicyEntry]]:
    """The datapath's decision for one enforced direction: ("deny"|"allow"|"default", matching entries)."""
    matching = [e for e in dp.entries if e.identity in (peer, IDENTITY_ANY) and covers(e.ports, proto, port)]
    denies = [e for e in matching if e.deny]
    if denies:
        return "deny", denies
    allows = [e for e in matching if not e.deny]
    if allows:
        return "allow", allows
    return "default", []


def _unenforced(res: Resolution, ep_id: int, d: Direction, side: Side, proto: int, port: int) -> list[str]:
    """The gaps (policy.enforcement_gaps) this side's verdict rests on: where the datapath decides otherwise."""
    out: list[str] = []
    if ep_id == HOST_ENDPOINT_ID and any(g.kind == "host-policy" for g in res.gaps):
        out.append(TRACE_TEXT["host-policy"])
    word = "egress" if d == Direction.EGRESS else "ingress"
    selected = set(res.selected_by.get((ep_id, d), []))
    for gap in res.gaps:
        o = gap.origin
        if o is None or gap.policy not in selected or o.section not in (word, word + "Deny"):
            continue
        deny = o.section.endswith("Deny")
        if side.kind == "allowed" and not deny and gap.weaker and o in side.origins and \
                (not gap.ports or any(covers(r, proto, port) for r in gap.ports)):
            where = gap.path_text if len(side.origins) == 1 else f"{origin_text(o)}: {gap.path_text}"
            out.append(f"{gap.trace_text} ({where})")
        elif (side.allowed and deny and gap.weaker) or (side.kind == "default-deny" and not deny and not gap.weaker):
            out.append(f"{gap.sentence()} ({origin_text(o)}: {gap.path_text})")   # it may decide this verdict
    return out


def _side(res: Resolution, ep_id: int | None, d: Direction, peer: int, proto: int, port: int,
          who: str, http: HTTPRequest | None = None) -> Side:
    side = _judged_side(res, ep_id, d, peer, proto, port, who)
    if ep_id is not None and side.applies:
        side.unenforced = _unenforced(res, ep_id, d, side, proto, port)
        if http is not None and side.kind == "allowed":
            _http_side(res, side, ep_id, d, peer, proto, port, http)
    return side


def _http_rule_matches(rule: model.HTTPRule, req: HTTPRequest) -> bool:
    """A rule with a host or header condition needs what the trace is not given: it does not match."""
    if rule.host or rule.headers or any(not m.mismatch for m in rule.header_matches):
        return False
    return (not rule.method or re2.fullmatch(rule.method, req.method)) and \
        (not rule.path or re2.fullmatch(rule.path, req.path))


def _http_side(res: Resolution, side: Side, ep_id: int, d: Direction, peer: int, proto: int, port: int,
               req: HTTPRequest) -> None:
    """The L7 verdict of an allowed side, as the HTTP proxy decides (node/http_proxy/config.py): where the port has
    rules.http for the peer, one of them must match the request; else the proxy answers 403."""
    allows = [a for a in res.state.http.get((ep_id, int(d)), [])
              if a.identity in (peer, IDENTITY_ANY) and covers(a.ports, proto, port)]
    if not allows:
        return                      # no HTTP rules on this port: L4 decides, no proxy
    what = f"HTTP {req.method} {req.path}"
    if any(not a.rules for a in allows):
        side.reason += f"; {what}: every request (an L4 allow of the same peer and port has no HTTP rules)"
        return
    hits = sorted({o for a in allows if any(_http_rule_matches(r, req) for r in a.rules) for o in a.origins})
    if hits:
        side.reason += f"; {what} allowed by the rules.http of {_origins_text(hits)}"
        return
    origins = sorted({o for a in allows for o in a.origins})
    side.allowed, side.kind = False, "l7-denied"
    side.reason = (f"{what} matches none of the rules.http of {_origins_text(origins)}: the HTTP proxy answers "
                   "403 Access denied")


def _judged_side(res: Resolution, ep_id: int | None, d: Direction, peer: int, proto: int, port: int,
                 who: str) -> Side:
    word = "egress" if d == Direction.EGRESS else "ingress"
    if ep_id is None:
        return Side(False, True, f"the {who} is not an endpoint: no {word} policy of its own", "not-an-endpoint")
    dp = res.state.endpoints[ep_id].direction(d)
    selected = res.selected_by.get((ep_id, d), [])
    if not dp.enforced:
        if res.mode == Enforcement.NEVER:
            why = "enforcement mode is never"
        elif not selected:
            why = f"no policy selects the {who} for {word}"
        else:
            why = (f"selected by {', '.join(selected)} but no rule turns on default deny for {word} "
                   "(enableDefaultDeny false)")
        return Side(True, True, why, "not-enforced")
    verdict, entries = judge(dp, peer, proto, port)
    origins = sorted({o for e in entries for o in e.origins})
    if verdict == "deny":
        return Side(True, False, f"explicit deny by {_origins_text(origins)}", "explicit-deny", origins)
    if verdict == "allow":
        if origins:
            return Side(True, True, f"allowed by {_origins_text(origins)}", "allowed", origins)
        if peer == ids.HOST and any(e.identity == ids.HOST for e in entries):
            return Side(True, True, "the host may always reach local endpoints (allow-localhost)", "allowed")
        return Side(True, True, f"no default deny for {word} (selected by {', '.join(selected)} only with "
                                "deny rules or enableDefaultDeny false); no deny matches", "allowed")
    dd = res.default_deny_by.get((ep_id, d), [])
    if dd:
        why = f"default deny: {word} of the {who} is enforced by {', '.join(dd)} and no rule allows this"
    else:
        why = f"default deny: enforcement mode always and no rule allows this {word}"
    return Side(True, False, why, "default-deny")


def _reserved_identity(peer: Peer) -> int | None:
    for lab in peer.labels:
        if lab.source == SOURCE_RESERVED:
            ident = ids.RESERVED.get(lab.key)
            if ident is None:
                raise UsageError(f"reserved:{lab.key} is not a reserved identity; use one of "
                                 f"{', '.join(sorted(ids.RESERVED))}")
            return ident
    return None


def _pseudo_endpoint(peer: Peer, ep_id: int, name: str) -> Endpoint:
    pod_labels: dict[str, str] = {}
    namespace = peer.namespace
    for lab in peer.labels:
        if lab.source not in (SOURCE_ANY, SOURCE_K8S):
            raise UsageError(f"label {lab}: only k8s: (or unprefixed) labels describe a pod; "
                             "use reserved:<name> alone for a reserved identity")
        if lab.key == POD_NAMESPACE_LABEL:
            namespace = namespace or lab.value
            continue
        pod_labels[lab.key] = lab.value
    return Endpoint(id=ep_id, name=name, namespace=namespace or "default", labels=pod_labels, ipv4=peer.ip or "")


def _check_ip(ip: str | None, flag: str) -> None:
    if ip:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise UsageError(f"{flag} {ip!r} is not an IP address") from None


def trace(src: Peer, dst: Peer, proto: int, port: int, policies: Iterable, mode: Enforcement | str = "default",
          *, endpoints: list[Endpoint] | None = None, allocator: ids.IdentityBackend | None = None,
          node_labels: Mapping[str, str] | None = None,
          namespace_labels: Mapping[str, Mapping[str, str]] | None = None, audit: bool = False,
          services: ServiceTable | None = None, host: HostFirewall | None = None,
          http: HTTPRequest | None = None) -> TraceResult:
    """Trace one connection src -> dst (proto, port; ICMP: port = type).

    `endpoints` are existing endpoints (the node's own, for --live): a side given only by an IP that belongs to
    one of them is that endpoint. Other sides given by labels become hypothetical endpoints. A destination that is
    a frontend of `services` is translated first, as the datapath does, and policy is traced to its backends."""
    kw: dict = {"endpoints": endpoints, "allocator": allocator, "node_labels": node_labels,
                "namespace_labels": namespace_labels, "audit": audit, "host": host, "http": http}
    names = {6: "tcp", 17: "udp"}
    xlat = (translate(services, dst.ip, port, names[proto], src.ip or "")
            if services and dst.ip and proto in names else None)
    if xlat is None:
        return _trace(src, dst, proto, port, policies, mode, **kw)
    info = xlat.to_dict()
    if not xlat.backends:
        res = _trace(src, dst, proto, port, policies, mode, **kw)
        res.egress = Side(True, False, f"service {xlat.service.id} ({xlat.service.frontend}) has no backend taking "
                          "new connections: dropped (158, Service backend not found) and refused", "no-backend")
        res.service = info
        return res
    results = [_trace(src, Peer(dst.labels, dst.namespace, b.ip), proto, b.port, policies, mode, **kw)
               for b in xlat.backends]
    # shown: the first backend that would be denied (exit 1 then), else the first; the others in service.traced
    pick = next((i for i, r in enumerate(results) if not r.allowed), 0)
    main = results[pick]
    info["backend"] = str(xlat.backends[pick])
    info["traced"] = [{"backend": str(b), "verdict": "allowed" if r.allowed else "denied"}
                      for b, r in zip(xlat.backends, results)]
    main.service = info
    if len({r.allowed for r in results}) > 1:
        main.notes.append("the verdict depends on the backend a connection gets: "
                          + ", ".join(f"{t['backend']} {t['verdict']}" for t in info["traced"]))
    return main


def _trace(src: Peer, dst: Peer, proto: int, port: int, policies: Iterable, mode: Enforcement | str = "default",
           *, endpoints: list[Endpoint] | None = None, allocator: ids.IdentityBackend | None = None,
           node_labels: Mapping[str, str] | None = None,
           namespace_labels: Mapping[str, Mapping[str, str]] | None = None, audit: bool = False,
           host: HostFirewall | None = None, http: HTTPRequest | None = None) -> TraceResult:
    mode = Enforcement(mode)
    if not src.given:
        raise UsageError("the source is missing: give --src-labels and/or --src-ip")
    if not dst.given:
        raise UsageError("the destination is missing: give --dst-labels and/or --dst-ip")
    _check_ip(src.ip, "--src-ip")
    _check_ip(dst.ip, "--dst-ip")
    base = list(endpoints or [])
    by_ip = {ep.ipv4.split("/")[0]: ep for ep in base if ep.ipv4}
    next_id = max([ep.id for ep in base] + [0]) + 1
    all_eps = list(base)
    chosen: list[int | str | None] = []     # endpoint id, "reserved:<id>", or None (by IP)
    for peer, name in ((src, "trace-source"), (dst, "trace-destination")):
        reserved = _reserved_identity(peer)
        if reserved is not None:
            chosen.append(f"reserved:{reserved}")
        elif peer.labels or peer.namespace is not None:
            ep = _pseudo_endpoint(peer, next_id, name)
            next_id += 1
            all_eps.append(ep)
            chosen.append(ep.id)
        elif peer.ip in by_ip:
            chosen.append(by_ip[peer.ip].id)
        else:
            chosen.append(None)
    host_is_endpoint = node_labels is not None
    res = resolve_detailed(all_eps, policies, mode, allocator or ids.MemoryAllocator(), node_labels=node_labels,
                           namespace_labels=namespace_labels, audit=audit, host=host)
    state = res.state

    def subject(peer: Peer, pick) -> Subject:
        if isinstance(pick, int):
            pol = state.endpoints[pick]
            ep = next(e for e in all_eps if e.id == pick)
            return Subject(pol.identity, sorted(state.identities.get(pol.identity, ())), ep.namespace,
                           peer.ip or ep.ipv4, pick, f"endpoint {ep.name} ({ep.namespace})")
        if isinstance(pick, str):
            ident = int(pick.split(":")[1])
            ep_id = HOST_ENDPOINT_ID if ident == ids.HOST and host_is_endpoint else None
            return Subject(ident, sorted(state.identities.get(ident, ids.reserved_labels(ident))), "",
                           peer.ip or "", ep_id, f"reserved:{ids.RESERVED_NAMES[ident]}")
        ip = peer.ip
        assert ip, "a peer without labels or namespace is given by its IP (trace() checked it is given)"
        ident = lpm_identity(state.ipcache, ip)
        what = ("world" if ident == ids.WORLD else
                f"CIDR identity {ident}" if ids.scope_of(ident) == "local" else f"identity {ident}")
        return Subject(ident, sorted(state.identities.get(ident, ())), "", ip, None, f"{ip} ({what})")

    s, d = subject(src, chosen[0]), subject(dst, chosen[1])
    egress = _side(res, s.endpoint_id, Direction.EGRESS, d.identity, proto, port, "source", http)
    ingress = _side(res, d.endpoint_id, Direction.INGRESS, s.identity, proto, port, "destination", http)
    # notes of the policies that take part in this connection only
    involved = set(res.selected_by.get((s.endpoint_id, Direction.EGRESS), []) if s.endpoint_id is not None else [])
    if d.endpoint_id is not None:
        involved.update(res.selected_by.get((d.endpoint_id, Direction.INGRESS), []))
    notes = [n for ref in sorted(involved) for n in res.notes_by_policy.get(ref, [])]
    if audit:
        notes.append("audit mode: the datapath reports a denied connection as AUDIT and forwards it")
    return TraceResult(s, d, proto, port, mode, egress, ingress, notes, audit, http=http)


def load_policy_files(paths: list[str]) -> list[model.Policy]:
    """Policies from files/folders, loaded and validated like `policy validate`. An invalid policy is a usage
    error (exit 2), so that trace's exit 1 always means "denied"."""
    from ciliumctl.policy import load, validate

    docs = load.load_paths([str(p) for p in paths])
    reports = validate.validate_documents(docs, validate.Options())
    bad = [r for r in reports if not r.valid]
    if bad:
        doc, f = bad[0].document, bad[0].errors[0]
        raise UsageError(f"{doc.file}:{f.line}:{f.column}: {f.path}: {f.message} ({len(bad)} invalid document(s); "
                      "`ciliumctl policy validate` lists every finding)")
    out = [model.parse_policy(r.document.data) for r in reports
           if r.checked and isinstance(r.document.data, Mapping) and r.document.data.get("kind") in model.KINDS]
    if not out:
        raise UsageError(f"no policy documents in {', '.join(paths)}; give CiliumNetworkPolicy, "
                         "CiliumClusterwideNetworkPolicy or NetworkPolicy YAML files or folders")
    return out


@dataclass
class LiveInputs:
    endpoints: list[Endpoint]
    policies: list
    mode: Enforcement | None
    allocator: ids.IdentityBackend
    audit: bool = False
    node_labels: dict[str, str] | None = None    # the host endpoint's labels while the host firewall is on
    host: HostFirewall | None = None              # the node's host firewall (enforcement_gaps), None: off
