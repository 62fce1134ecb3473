"""What the DNS proxy enforces and learns on this node (the proxy's `Policy`, node/dns_proxy.py).

reconcile writes, with every revision, `<state>/dns-policy.json`: per endpoint address its rules.dns (server
identity, port, names; ResolvedState.dns), the toFQDNs selectors and the revision's ipcache, so the proxy (in the
agent) decides a query as the datapath would: the server's identity by longest prefix, as the ipcache map. A
client the file does not name gets REFUSED (fail closed).

learn(): an allowed NOERROR answer goes into the DNS cache (node/fqdn_cache.py); when an address is new for a
name a toFQDNs selector matches, reconcile programs it (under the node lock) before the proxy releases the answer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ciliumctl.base import paths, statefile
from ciliumctl.node.fqdn_cache import DEFAULT_GRACE, DEFAULT_MIN_TTL, FQDNCache
from ciliumctl.policy.fqdn import NameMatch
from ciliumctl.policy.resolved import IDENTITY_ANY, PROTO_ANY, PROTO_TCP, PROTO_UDP, ResolvedState

log = logging.getLogger("ciliumctl.node.dns_policy")
WORLD = 2
DEFAULT_PROXY_PORT = 10053      # the agent's --tofqdns-proxy-port default (node.fqdn_agent)


def proxy_info_path() -> Path:
    return paths.state_dir() / "dns-proxy.json"


def proxy_port() -> int:
    """Where the datapath sends DNS of endpoints with DNS rules: the port the last agent bound, else the default."""
    data = statefile.read_json(proxy_info_path(), default=None)
    return int(data["port"]) if isinstance(data, dict) and data.get("port") else DEFAULT_PROXY_PORT


def policy_path() -> Path:
    return paths.state_dir() / "dns-policy.json"


def _names(names) -> list[list[str]]:
    return [[n.name, n.pattern] for n in names]


def save(state: ResolvedState, endpoint_ips: dict[int, str]) -> None:
    """The proxy's view of a revision just programmed (endpoint_ips: endpoint id -> its IPv4 address)."""
    eps = {}
    for ep_id, allows in state.dns.items():
        ip = endpoint_ips.get(ep_id)
        if ip:
            eps[ip.split("/")[0]] = {"id": ep_id, "allows": [
                {"identity": a.identity, "proto": a.ports.proto, "lo": a.ports.lo, "hi": a.ports.hi,
                 "names": _names(a.names)} for a in allows]}
    if not eps and not state.fqdn_selectors:
        # nothing for the proxy (a missing file refuses every query): no write on every reconcile
        with contextlib.suppress(FileNotFoundError):
            policy_path().unlink()
        return
    data = {"revision": state.revision, "endpoints": eps, "selectors": _names(state.fqdn_selectors),
            "ipcache": state.ipcache if eps else {}}
    statefile.write_json(policy_path(), data)


def redirect(state: ResolvedState, port: int) -> None:
    """Send the DNS of endpoints with rules.dns to the proxy: their egress entries that carry rules.dns get the
    proxy's port (Cilium: the policy entry's proxy port is the DNS proxy's, pkg/policy/l4.go redirect ports).
    An entry that also allows without DNS rules (the same peer and port in another rule) is redirected all the
    same: the proxy decides, as in Cilium."""
    for ep_id, allows in state.dns.items():
        pol = state.endpoints.get(ep_id)
        if pol is None:
            continue
        keys = {(a.identity, a.ports) for a in allows}
        pol.egress.entries = [dataclasses.replace(e, proxy_port=port)
                              if not e.deny and (e.identity, e.ports) in keys else e for e in pol.egress.entries]


class _View:
    """dns-policy.json parsed, reread when the file changes."""

    def __init__(self):
        self.key: tuple | None = None
        self.endpoints: dict[str, dict] = {}
        self.selectors: tuple[NameMatch, ...] = ()
        self.ipcache: dict[int, dict[int, int]] = {}      # prefix length -> network int -> identity

    def refresh(self, path: Path) -> _View:
        try:
            st = os.stat(path)
            key: tuple | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            key = None
        if key == self.key:
            return self
        data = statefile.read_json(path, default={}) or {}
        self.endpoints = {ip: {**ep, "allows": [{**a, "names": tuple(NameMatch(*n) for n in a["names"])}
                                                for a in ep["allows"]]}
                          for ip, ep in (data.get("endpoints") or {}).items()}
        self.selectors = tuple(NameMatch(*n) for n in data.get("selectors") or ())
        self.ipcache = {}
        for prefix, ident in (data.get("ipcache") or {}).items():
            net = ipaddress.ip_network(prefix, strict=False)
            if net.version == 4:
                self.ipcache.setdefault(net.prefixlen, {})[int(net.network_address)] = int(ident)
        self.key = key
        return self

    def identity_of(self, ip: str) -> int:
        """Longest prefix match, as the ipcache map; no match = world."""
        addr = int(ipaddress.IPv4Address(ip))
        for plen in sorted(self.ipcache, reverse=True):
            mask = (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF
            hit = self.ipcache[plen].get(addr & mask)
            if hit is not None:
                return hit
        return WORLD


class NodeDNSPolicy:
    """The proxy's Policy on a node. reconcile: called under the node lock when learning changed what toFQDNs
    selects (node.reconcile.reconcile in the agent)."""

    def __init__(self, reconcile: Callable[[], object], lock: Callable, min_ttl: int = DEFAULT_MIN_TTL,
                 grace: float = DEFAULT_GRACE, path: Path | None = None):
        self.reconcile, self.lock = reconcile, lock
        self.min_ttl, self.grace = min_ttl, grace
        self.path = path or policy_path()
        self._view = _View()
        self._mutex = threading.Lock()
        self.on_flow: Callable | None = None           # (flows.dns.DNSEvent) for flows
        self.last_program_ms: float | None = None      # answer -> datapath, the last time learning programmed

    def view(self) -> _View:
        with self._mutex:
            return self._view.refresh(self.path)

    def endpoint_of(self, ip: str) -> dict | None:
        return self.view().endpoints.get(ip)

    def allowed(self, q) -> bool:
        view = self.view()
        ep = view.endpoints.get(q.client[0])
        if ep is None:
            return False
        server_id = view.identity_of(q.server[0])
        proto = PROTO_UDP if q.proto == "udp" else PROTO_TCP
        port = q.server[1]
        for a in ep["allows"]:
            if a["identity"] not in (IDENTITY_ANY, server_id) or a["proto"] not in (PROTO_ANY, proto):
                continue
            if (a["lo"] or a["hi"]) and not a["lo"] <= port <= a["hi"]:
                continue
            if any(n.matches(q.qname) for n in a["names"]):
                return True
        return False

    def learn(self, q, a) -> None:
        if a.rcode != "NOERROR" or not a.ips:
            return
        view = self.view()
        ep = view.endpoints.get(q.client[0])
        if ep is None:
            return
        names = [q.qname, *a.cnames]
        ips = [(ip, ttl) for ip, ttl in a.ips if ":" not in ip]     # the datapath is IPv4-only
        wanted = any(s.matches(n) for s in view.selectors for n in names)
        t0 = time.monotonic()
        with self.lock():
            cache = FQDNCache(min_ttl=self.min_ttl, grace=self.grace)
            with cache.locked():
                cache.load()
                changed = cache.add(int(ep["id"]), names, ips)
                cache.save()
            if changed and wanted:
                self.reconcile()
                self.last_program_ms = (time.monotonic() - t0) * 1000

    def observe(self, q, a) -> None:
        """A query (a None) or what came of it, as a DNS flow: the request when it arrives (DROPPED when it is
        refused, so once its answer is known), the response when the answer is released."""
        if self.on_flow is None or (a is None and not q.qname):
            return
        from ciliumctl.flows.dns import RCODES, DNSEvent

        if a is None:
            return               # the request is reported with its decision (below)
        view = self.view()
        base = dict(client=q.client, server=q.server, proto=PROTO_UDP if q.proto == "udp" else PROTO_TCP,
                    query=q.qname, qtypes=(q.qtype,) if q.qtype else (),
                    client_identity=view.identity_of(q.client[0]), server_identity=view.identity_of(q.server[0]))
        self.on_flow(DNSEvent(response=False, allowed=a.allowed, time_ns=q.wall_ns, **base))
        if a.allowed:
            self.on_flow(DNSEvent(response=True, rcode=RCODES.get(a.rcode, 0), ips=tuple(ip for ip, _ in a.ips),
                                  ttl=min((t for _, t in a.ips), default=0), cnames=tuple(a.cnames),
                                  rrtypes=tuple(a.rrtypes), latency_ns=int((time.monotonic() - q.started) * 1e9),
                                  **base))

    def expire(self, now: float | None = None) -> int:
        """Drop what expired; reprogram when something went. The number of entries removed."""
        cache = FQDNCache()
        with cache.locked():
            cache.load()
            nxt = cache.next_expiry()
        if nxt is None or nxt > (time.time() if now is None else now):
            return 0
        with self.lock():
            with cache.locked():
                cache.load()
                gone = cache.expire(now)
                cache.save()
            if gone:
                self.reconcile()
        return len(gone)
