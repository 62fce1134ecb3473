"""HAProxy's configuration from a revision's rules.http (ResolvedState.http), pure: text in, text out.

One transparent listener takes every connection the datapath redirects (bpf/lib/proxy.h): the client is its
peer, the original destination its local address. Identities come from a map file, the revision's ipcache
(prefix -> identity, longest match as the datapath's LPM), updated through the runtime API without a reload
(node/http_proxy/haproxy.py); the rules name identities, so a new pod changes the map, not the configuration.

A request is checked against the rules of each side that has some for it: the client's egress rules (its
identity, the server's identity, the port) and the server's ingress rules (the other way round), as Cilium's
proxy applies the L7 policy of the endpoint it was redirected for. The connection reached the proxy because one
side has rules; a request that no side's rules concern is denied (fail closed). Denied: 403 with `Access denied`
as Cilium's Envoy filter answers (proxylib/cilium's AccessDenied, cilium-envoy `Access denied\\r\\n`).

Cilium's HTTP rule fields (pkg/policy/api/http.go): method, path, host are RE2 regexes matched against the
whole value (Envoy's safe_regex full match; the path is Envoy's `:path`, with the query), headers are `Name` (the
header is present) or `Name: value` (exact), headerMatches name + value exact; a mismatch action (LOG, ADD,
DELETE, REPLACE) lets a mismatching request pass in Cilium, so the match does not decide here (the header
edits themselves are not made: still a gap). HAProxy runs PCRE2, which reads the RE2 syntax `validate` accepts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ciliumctl.base.errors import UsageError
from ciliumctl.policy import model
from ciliumctl.policy.resolve import HOST_ENDPOINT_ID
from ciliumctl.policy.resolved import IDENTITY_ANY, PROTO_ANY, PROTO_TCP, Direction, HTTPAllow, ResolvedState

WORLD = 2
DENY_BODY = "Access denied\\r\\n"        # HAProxy string escapes: Envoy's body, CRLF included
# the log line node/http_proxy/service.py parses: one field per |, the URI last (it may hold |)
LOG_FORMAT = ("%Ts%ms|%ci|%cp|%fi|%fp|%[var(txn.src_id)]|%[var(txn.dst_id)]|%[var(txn.dir)]|%ST|%Tr|%Ta"
              "|%HM|%HV|%[capture.req.hdr(0)]|%[var(txn.verdict)]|%HU")
LOG_FIELDS = 16


class Unexpressible(UsageError):
    """A rule HAProxy's configuration cannot carry (exit 2): nothing is applied."""


@dataclass(frozen=True)
class Paths:
    run_dir: str                     # sockets and files of this proxy
    @property
    def admin(self) -> str:
        return f"{self.run_dir}/admin.sock"

    @property
    def log(self) -> str:
        return f"{self.run_dir}/log.sock"

    @property
    def ipcache_map(self) -> str:
        return f"{self.run_dir}/ipcache.map"

    @property
    def config(self) -> str:
        return f"{self.run_dir}/haproxy.cfg"

    @property
    def pidfile(self) -> str:
        return f"{self.run_dir}/haproxy.pid"


def _quote(value: str, what: str) -> str:
    """A single-quoted HAProxy word: taken literally, so it may hold anything but a quote or a line break."""
    if "'" in value or "\n" in value or "\r" in value:
        raise Unexpressible(f"{what} {value!r}: HAProxy's configuration cannot carry a quote or line break in it; "
                            "rewrite the rule without one")
    return f"'{value}'"


def _full(regex: str) -> str:
    return f"^(?:{regex})$"


def rule_condition(rule: model.HTTPRule, where: str) -> str:
    """The ACLs (ANDed) of one HTTP rule; '' matches every request."""
    acl = []
    if rule.method:
        acl.append(f"{{ method -m reg {_quote(_full(rule.method), f'{where}: method')} }}")
    if rule.path:
        acl.append(f"{{ pathq -m reg {_quote(_full(rule.path), f'{where}: path')} }}")
    if rule.host:
        acl.append(f"{{ req.hdr(host) -m reg {_quote(_full(rule.host), f'{where}: host')} }}")
    for h in rule.headers:
        name, sep, value = h.partition(":")
        name, value = name.strip(), value.strip()
        if not name or " " in name:
            raise Unexpressible(f"{where}: header rule {h!r} has no header name HAProxy can match; write 'Name' or "
                                "'Name: value'")
        acl.append(f"{{ req.fhdr({name}) -m str {_quote(value, f'{where}: header')} }}" if sep and value
                   else f"{{ req.fhdr_cnt({name}) -m int gt 0 }}")
    for m in rule.header_matches:
        if m.secret:
            raise Unexpressible(f"{where}: headerMatches {m.name!r} takes its value from a secret, which the HTTP "
                                "proxy cannot read; give the value inline or drop the match")
        if m.mismatch:
            continue            # Cilium lets a mismatching request pass (and edits or logs it)
        if not m.name or " " in m.name:
            raise Unexpressible(f"{where}: headerMatches name {m.name!r} is no header name")
        acl.append(f"{{ req.fhdr({m.name}) -m str {_quote(m.value, f'{where}: headerMatches value')} }}"
                   if m.value else f"{{ req.fhdr_cnt({m.name}) -m int gt 0 }}")
    return " ".join(acl)


def _ports(a: HTTPAllow) -> str:
    if a.ports.any_port:
        return ""
    if a.ports.proto not in (PROTO_TCP, PROTO_ANY):
        return "NONE"
    return f"{{ dst_port {a.ports.lo} }}" if a.ports.lo == a.ports.hi else f"{{ dst_port {a.ports.lo}:{a.ports.hi} }}"


def rule_sets(state: ResolvedState) -> list[tuple[int, int, HTTPAllow]]:
    """(direction, endpoint identity, allow) once per identity: endpoints of one identity share their policy."""
    out: dict[tuple[int, int, HTTPAllow], None] = {}
    for (ep_id, d), allows in sorted(state.http.items()):
        ep = state.endpoints.get(ep_id)
        if ep is None:
            continue
        for a in allows:
            out[(d, ep.identity, a)] = None
    return list(out)


def render(state: ResolvedState, port: int, paths: Paths) -> str:
    """The whole configuration. Raises Unexpressible on a rule it cannot carry."""
    lines = [
        "# generated by ciliumctl from the resolved policy (node/http_proxy/config.py); rewritten on every change",
        "global",
        f"    stats socket {paths.admin} mode 600 level admin expose-fd listeners",
        f"    pidfile {paths.pidfile}",
        f"    log unix@{paths.log} len 8192 format raw local0",
        "    nbthread 2",
        "defaults",
        "    mode http",
        "    log global",
        f"    log-format \"{LOG_FORMAT}\"",
        "    timeout connect 5s",
        "    timeout client 5m",
        "    timeout server 5m",
        "    timeout http-request 30s",
        "    timeout http-keep-alive 5m",
        "frontend l7",
        f"    bind 0.0.0.0:{port} transparent",
        "    capture request header Host len 256",
        f"    http-request set-var(txn.src_id) src,map_ip_int({paths.ipcache_map},{WORLD})",
        f"    http-request set-var(txn.dst_id) dst,map_ip_int({paths.ipcache_map},{WORLD})",
    ]
    for n, (d, own, a) in enumerate(rule_sets(state)):
        side = "eg" if d == Direction.EGRESS else "in"
        me, peer = ("src", "dst") if d == Direction.EGRESS else ("dst", "src")
        key = [f"{{ var(txn.{me}_id) -m int {own} }}"]
        if a.identity != IDENTITY_ANY:
            key.append(f"{{ var(txn.{peer}_id) -m int {a.identity} }}")
        ports = _ports(a)
        if ports == "NONE":
            continue
        if ports:
            key.append(ports)
        cond = " ".join(key)
        origin = ", ".join(f"{o.namespace + '/' if o.namespace else ''}{o.name} {o.section}[{o.index}]"
                           for o in a.origins)
        lines.append(f"    # {side} rule set {n}: {origin}")
        lines.append(f"    http-request set-var(txn.{side}) int(1) if {cond}")
        for r in (a.rules or (model.HTTPRule(),)):
            more = rule_condition(r, origin or "rules.http")
            lines.append(f"    http-request set-var(txn.{side}_ok) int(1) if {cond} {more}".rstrip())
    lines += [
        # no side's rules concern the request: denied (fail closed); a side with rules: one of them must match
        "    http-request set-var(txn.verdict) str(DROPPED) if !{ var(txn.eg) -m int 1 } !{ var(txn.in) -m int 1 }",
        "    http-request set-var(txn.verdict) str(DROPPED) if { var(txn.eg) -m int 1 } !{ var(txn.eg_ok) -m int 1 }",
        "    http-request set-var(txn.verdict) str(DROPPED) if { var(txn.in) -m int 1 } !{ var(txn.in_ok) -m int 1 }",
        "    http-request set-var(txn.dir) str(ingress) if { var(txn.in) -m int 1 }",
        "    http-request set-var(txn.dir) str(egress) if !{ var(txn.in) -m int 1 }",
        f"    http-request deny deny_status 403 content-type text/plain string \"{DENY_BODY}\" "
        "if { var(txn.verdict) -m str DROPPED }",
        "    http-request set-var(txn.verdict) str(FORWARDED)",
    ]
    local = sorted({ep.identity for ep in state.endpoints.values() if ep.endpoint_id != HOST_ENDPOINT_ID})
    if local:
        lines.append(f"    use_backend to_endpoint if {{ var(txn.dst_id) -m int {' '.join(map(str, local))} }}")
    lines += [
        "    default_backend original_destination",
        # to the address and port the client asked for. To an endpoint of this node: from the client's own
        # address, so that the destination's policy sees the client's identity (bpf/lib/enforce.h
        # from_proxy_upstream steers the replies back); elsewhere from the node's address, whose replies are
        # the node's own (a reply to a pod's address arriving from outside would be forwarded, not proxied)
        "backend to_endpoint",
        "    source 0.0.0.0 usesrc clientip",
        "    server original 0.0.0.0",
        "backend original_destination",
        "    server original 0.0.0.0",
        "",
    ]
    return "\n".join(lines)


def map_entries(ipcache: Mapping[str, int]) -> dict[str, str]:
    """The identity map: IPv4 prefix -> identity (HAProxy's map_ip takes the longest matching prefix)."""
    out = {}
    for prefix, ident in ipcache.items():
        if ":" in prefix:
            continue
        out[prefix[:-3] if prefix.endswith("/32") else prefix] = str(ident)
    return out


def map_text(entries: Mapping[str, str]) -> str:
    return "".join(f"{k} {v}\n" for k, v in sorted(entries.items()))


def redirect(state: ResolvedState, port: int) -> None:
    """Send the connections rules.http concerns to the proxy: the allow entries of the same peer and port range get
    its port (Cilium's policy entry proxy port, pkg/policy/l4.go); other ports never reach it."""
    for (ep_id, d), allows in state.http.items():
        pol = state.endpoints.get(ep_id)
        if pol is None:
            continue
        keys = {(a.identity, a.ports) for a in allows}
        side = pol.direction(Direction(d))
        side.entries = [dataclasses.replace(e, proxy_port=port) if not e.deny and (e.identity, e.ports) in keys
                        else e for e in side.entries]


def check_rules(allows: Iterable[HTTPAllow]) -> None:
    """Raise Unexpressible for the first rule HAProxy cannot carry."""
    for a in allows:
        for r in a.rules:
            rule_condition(r, "rules.http")
