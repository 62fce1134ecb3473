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
from ciliumctl.policy.resolved import (
    IDENTITY_ANY,
    PROTO_ANY,
    PROTO_TCP,
    Direction,
    HTTPAllow,
    PortRange,
    ResolvedState,
)

WORLD = 2
DENY_BODY = "Access denied\\r\\n"        # HAProxy string escapes: Envoy's body, CRLF included
# the log line node/http_proxy/service.py parses: one field per |, the URI last (it may hold |)
LOG_FORMAT = ("%Ts%ms|%ci|%cp|%fi|%fp|%[var(txn.src_id)]|%[var(txn.dst_id)]|%[var(txn.dir)]|%ST|%Tr|%Ta"
              "|%HM|%HV|%[capture.req.hdr(0)]|%[var(txn.verdict)]|%HU")
LOG_FIELDS = 16
HARD_STOP_AFTER = "2m"    # connections idle this long across a reload are closed then
LOG_RING_BYTES = 4 << 20      # ~20,000 requests' lines while the agent is busy or restarting


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

    def acl(self, name: str) -> str:
        return f"{self.run_dir}/{name}.lst"

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


def _ports(ports: PortRange) -> str:
    if ports.any_port:
        return ""
    if ports.proto not in (PROTO_TCP, PROTO_ANY):
        return "NONE"
    return f"{{ dst_port {ports.lo} }}" if ports.lo == ports.hi else f"{{ dst_port {ports.lo}:{ports.hi} }}"


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


@dataclass(frozen=True)
class RuleGroup:
    """Rules of one direction and port range, whoever they concern: the configuration carries the rules, an ACL file
    (identity pairs `own:peer`, `own:*` for every peer) says whom they concern. A new pod, an identity that comes or
    goes, changes files through the runtime API (`add acl` / `del acl`), not the configuration: no reload."""

    direction: int
    ports: PortRange
    rules: tuple
    origins: tuple


def rule_groups(state: ResolvedState) -> dict[RuleGroup, set[str]]:
    """Each group (in an order that does not depend on identities) with its identity pairs."""
    pairs: dict[tuple, set[str]] = {}
    origins: dict[tuple, dict] = {}
    for d, own, a in rule_sets(state):
        key = (d, a.ports, a.rules)
        pairs.setdefault(key, set()).add(f"{own}:{'*' if a.identity == IDENTITY_ANY else a.identity}")
        origins.setdefault(key, {}).update(dict.fromkeys(a.origins))
    groups = {RuleGroup(d, ports, rules, tuple(origins[(d, ports, rules)])): got
              for (d, ports, rules), got in pairs.items()}
    return dict(sorted(groups.items(), key=lambda kv: repr(kv[0])))


def acl_entries(state: ResolvedState) -> dict[str, set[str]]:
    """ACL file name -> its lines: each rule group's identity pairs; the identities of this node's endpoints."""
    out = {f"group{n}": pairs for n, pairs in enumerate(rule_groups(state).values())}
    out["local"] = {str(ep.identity) for ep in state.endpoints.values()
                    if ep.endpoint_id != HOST_ENDPOINT_ID}
    return out


def render(state: ResolvedState, port: int, paths: Paths) -> str:
    """The whole configuration. Raises Unexpressible on a rule it cannot carry. Identities are not in it (see
    RuleGroup, acl_entries): only a change of the rules themselves changes it."""
    lines = [
        "# generated by ciliumctl from the resolved policy (node/http_proxy/config.py); rewritten on every change",
        "global",
        f"    stats socket {paths.admin} mode 600 level admin expose-fd listeners",
        f"    pidfile {paths.pidfile}",
        # one log line per request, into a ring that HAProxy forwards over a stream socket to the agent: lines
        # arrive in batches, a slow agent costs the proxy nothing (a full ring drops the oldest lines, never
        # blocks), an agent restarting finds them waiting (a datagram socket queues 10 lines: net.unix.max_dgram_qlen)
        "    log ring@agent len 8192 format raw local0",
        "    nbthread 2",
        # a reload's old worker ends within this even if a client keeps its connection open
        f"    hard-stop-after {HARD_STOP_AFTER}",
        "ring agent",
        "    description \"L7 flows to the ciliumctl agent\"",
        "    format raw",
        "    maxlen 8192",
        f"    size {LOG_RING_BYTES}",
        "    timeout connect 1s",
        "    timeout server 10s",
        f"    server agent unix@{paths.log}",
        "defaults",
        "    mode http",
        "    log global",
        f"    log-format \"{LOG_FORMAT}\"",
        "    timeout connect 5s",
        "    timeout client 5m",
        "    timeout server 5m",
        "    timeout http-request 30s",
        "    timeout http-keep-alive 5m",
        # a reload (only when the rules change): the old worker does not close a kept-alive connection while idle,
        # where a request the client sends at that moment would be lost (HTTP/1.1 clients need not retry it); it
        # answers the next request with `Connection: close` (backported to Debian's 2.6; HAProxy 2.4+ otherwise
        # closes idle connections at once on soft-stop: the connections the benchmark saw broken)
        "    option idle-close-on-response",
        # an upstream connection belongs to its client connection, as the client's own connection would (HAProxy's
        # default, safe, pools them per source address across the client's connections and closes with a reset
        # what exceeds its estimate of the need, srv_add_to_idle_list in src/server.c: under load most requests
        # paid a new upstream connection); never also keeps one pod's requests off another one's connection
        "    http-reuse never",
        "frontend l7",
        f"    bind 0.0.0.0:{port} transparent",
        "    capture request header Host len 256",
        f"    http-request set-var(txn.src_id) src,map_ip_int({paths.ipcache_map},{WORLD})",
        f"    http-request set-var(txn.dst_id) dst,map_ip_int({paths.ipcache_map},{WORLD})",
        # the identity pairs the groups' ACL files hold: ingress own = the server, egress own = the client
        "    http-request set-var(txn.in_pair) var(txn.dst_id),concat(:,txn.src_id,)",
        "    http-request set-var(txn.in_any) var(txn.dst_id),concat(:*)",
        "    http-request set-var(txn.eg_pair) var(txn.src_id),concat(:,txn.dst_id,)",
        "    http-request set-var(txn.eg_any) var(txn.src_id),concat(:*)",
    ]
    for n, group in enumerate(rule_groups(state)):
        side = "eg" if group.direction == Direction.EGRESS else "in"
        ports = _ports(group.ports)
        if ports == "NONE":
            continue
        acl = paths.acl(f"group{n}")
        origin = ", ".join(f"{o.namespace + '/' if o.namespace else ''}{o.name} {o.section}[{o.index}]"
                           for o in group.origins)
        lines.append(f"    # {side} rule group {n}: {origin}")
        lines.append(f"    http-request set-var(txn.g{n}) int(1) if {{ var(txn.{side}_pair) -m str -f {acl} }} {ports}"
                     f" || {{ var(txn.{side}_any) -m str -f {acl} }} {ports}")
        cond = f"{{ var(txn.g{n}) -m int 1 }}"
        lines.append(f"    http-request set-var(txn.{side}) int(1) if {cond}")
        for r in (group.rules or (model.HTTPRule(),)):
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
        f"    use_backend to_endpoint if {{ var(txn.dst_id) -m int -f {paths.acl('local')} }}",
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
