"""What the DNS proxy enforces and learns on this node (the proxy's `Policy`, node/dns_proxy/server.py).

reconcile writes, with every revision, `<state>/dns-policy.json`: per endpoint address its rules.dns (server
identity, port, names; ResolvedState.dns), the toFQDNs selectors and the revision's ipcache, so the proxy (in the
agent) decides a query as the datapath would: the server's identity by longest prefix, as the ipcache map. A
client the file does not name gets REFUSED (fail closed).

learn(): an allowed NOERROR answer goes into the DNS cache (node/dns_proxy/cache.py); an address new for a name a
toFQDNs selector matches is programmed before the proxy releases the answer: its ipcache entry alone when its label
set's identity is programmed, else that identity's policy entries first (node.dns_proxy.service, under the node
lock), else by a reconcile.
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
from ciliumctl.node.dns_proxy.cache import DEFAULT_GRACE, DEFAULT_MIN_TTL, FQDNCache
from ciliumctl.policy.fqdn import NameMatch, RulePrefixes, learned_labels
from ciliumctl.policy.resolved import IDENTITY_ANY, PROTO_ANY, PROTO_TCP, PROTO_UDP, ResolvedState

log = logging.getLogger("ciliumctl.node.dns_proxy.policy")
WORLD = 2
DEFAULT_PROXY_PORT = 10053      # the agent's --tofqdns-proxy-port default (node.dns_proxy.service)


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
    # the learned addresses' identities of this revision (their policy is programmed): a new address of the same
    # label set needs only its ipcache entry (NodeDNSPolicy.learn)
    learned = [[sorted(ls), i] for i, ls in state.identities.items() if any(x.startswith("fqdn:") for x in ls)]
    data = {"revision": state.revision, "endpoints": eps, "selectors": _names(state.fqdn_selectors),
            "prefixes": list(state.fqdn_prefixes), "learned_identities": learned,
            "ipcache": state.ipcache if eps else {}}
    # compact: the C encoder (it grows with the learned addresses; written on the way from an answer to the map)
    statefile.write_json(policy_path(), data, compact=True)


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
        self.revision = 0
        self.prefixes = RulePrefixes(())
        self.learned: dict[frozenset[str], int] = {}      # label set -> identity, programmed in `revision`

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
        self.revision = int(data.get("revision") or 0)
        self.prefixes = RulePrefixes(data.get("prefixes") or ())
        self.learned = {frozenset(ls): int(i) for ls, i in data.get("learned_identities") or ()}
        self.ipcache = {}
        for prefix, ident in (data.get("ipcache") or {}).items():
            net = ipaddress.ip_network(prefix, strict=False)
            if net.version == 4:
                self.ipcache.setdefault(net.prefixlen, {})[int(net.network_address)] = int(ident)
        self.key = key
        return self

    def exact(self, ip: str) -> int | None:
        """The identity of the ip's own /32 entry, if the revision has one."""
        return self.ipcache.get(32, {}).get(int(ipaddress.IPv4Address(ip)))

    def identity_of(self, ip: str) -> int:
        """Longest prefix match, as the ipcache map; no match = world."""
        addr = int(ipaddress.IPv4Address(ip))
        for plen in sorted(self.ipcache, reverse=True):
            mask = (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF
            hit = self.ipcache[plen].get(addr & mask)
            if hit is not None:
                return hit
        return WORLD


def _stat_key(path: Path) -> tuple | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


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
        self.datapath: Callable | None = None          # -> an open datapath.loader.Datapath (the agent's)
        self._cache_obj = FQDNCache(min_ttl=min_ttl, grace=grace)
        self._cache_key: tuple | None = ()
        self._dirty = False
        self._learn_mutex = threading.Lock()
        self._inplace: dict[str, int] = {}               # address -> the revision it was written into in place
        self._inplace_sets: dict[frozenset[str], tuple[int, int]] = {}   # label set -> (identity, revision), ditto
        self.last_program_ms: float | None = None      # answer -> datapath, the last time learning programmed
        # (datapath, revision, its learned label sets -> identity, new addresses -> names) -> every address's label
        # set -> identity, or None: new label sets in place (node mode: node.dns_proxy.service.program_new_identities);
        # None: a reconcile
        self.new_identities: Callable | None = None

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

    # ---- the cache: kept in memory, saved before a reconcile (which reads the file) and otherwise by expire()
    # (the agent's expiry loop, every second), so a lookup costs no file write. When someone else changed the file
    # (`fqdn cache clean`), it is merged before it is used or saved (FQDNCache.merge_file): what we learned and did
    # not save yet stays unless that clean covers it, so a clean is never undone by our save. The file's key is
    # taken under its lock, so a change made right after our save is not mistaken for ours.

    def _cache(self) -> FQDNCache:
        if _stat_key(self._cache_obj.path) != self._cache_key:
            with self._cache_obj.locked():
                self._merge_locked()
        return self._cache_obj

    def _merge_locked(self) -> None:
        key = _stat_key(self._cache_obj.path)
        if key != self._cache_key:
            self._cache_obj.merge_file()
            self._cache_key = key

    def _save(self) -> None:
        with self._cache_obj.locked():
            self._merge_locked()
            self._cache_obj.save()
            self._cache_key = _stat_key(self._cache_obj.path)
        self._dirty = False

    def flush(self) -> None:
        """Save what changed since the last save (the agent stops)."""
        with self._learn_mutex:
            if self._dirty:
                self._save()

    def learn_nowait(self, q, a) -> bool:
        """learn() when it is quick and never blocks: nothing to learn, or only expiries that move on (the cache
        free at once). False: call learn() (in a thread)."""
        if a.rcode != "NOERROR" or not a.ips:
            return True
        view = self.view()
        ep = view.endpoints.get(q.client[0])
        if ep is None:
            return True
        if not self._learn_mutex.acquire(blocking=False):
            return False
        try:
            cache = self._cache()
            names = [q.qname, *a.cnames]
            ips = [(ip, ttl) for ip, ttl in a.ips if ":" not in ip]
            if any(cache.is_new(n, ip) for n in names for ip, _ in ips) or \
                    any(self._missing(view, cache, ip) for ip, _ in ips):
                return False
            cache.add(int(ep["id"]), names, ips)
            self._dirty = True
            return True
        finally:
            self._learn_mutex.release()

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
        ep_id = int(ep["id"])
        with self._learn_mutex:
            cache = self._cache()
            cache.add(ep_id, names, ips)
            self._dirty = True           # saved within a second (or before a reconcile)
            if not wanted:
                return
            # what the programmed revision lacks: new addresses, and known ones a reconcile by another process
            # dropped before our file had them (they come back with this lookup)
            missing = [ip for ip, _ in ips if self._missing(view, cache, ip)]
            if not missing:
                return
            # in the cache's journal first, so that a reconcile before our next save keeps them (FQDNCache.append);
            # then in place, without the node lock (the datapath's own lock and the revision check keep it
            # consistent); else, under the node lock, new label sets in place (their identities' entries alone);
            # else a reconcile (it reads the cache file: saved first)
            with cache.locked():
                cache.append([e for n in names for ip in missing if (e := cache.entries.get((ep_id, n, ip)))])
            if not self._in_place(view, cache, missing):
                with self.lock():
                    if not self._new_identities(view, cache, missing):
                        self._save()
                        self.reconcile()
            self.last_program_ms = (time.monotonic() - t0) * 1000

    def _missing(self, view: _View, cache: FQDNCache, ip: str) -> bool:
        """The address is wanted by a selector but the programmed revision does not have it with its identity
        (not written in place since that revision either)."""
        labels = learned_labels(ip, cache.names_of(ip), view.selectors, view.prefixes)
        if labels is None:
            return False
        have = view.exact(ip)
        if have is not None:
            return have != self._programmed(view).get(labels)
        return self._inplace.get(ip) != view.revision

    def _programmed(self, view: _View) -> dict[frozenset[str], int]:
        """The learned label sets the active revision has an identity (and its policy entries) for: the view's, and
        those added in place since."""
        added = {ls: i for ls, (i, rev) in self._inplace_sets.items() if rev == view.revision}
        return {**view.learned, **added} if added else view.learned

    def _in_place(self, view: _View, cache: FQDNCache, ips: list[str]) -> bool:
        """The new addresses into the active revision's ipcache, when each one's label set already has an
        identity programmed there (Datapath.add_ipcache); False: a reconcile is needed."""
        entries = {}
        programmed = self._programmed(view)
        for ip in ips:
            labels = learned_labels(ip, cache.names_of(ip), view.selectors, view.prefixes)
            ident = programmed.get(labels) if labels is not None else None
            if ident is None or view.exact(ip) is not None:
                return False
            entries[f"{ip}/32"] = ident
        if self.datapath is None:
            return False
        try:
            if not self.datapath().add_ipcache(entries, view.revision):
                return False
            self._inplace.update((ip, view.revision) for ip in ips)
            return True
        except Exception as err:  # noqa: BLE001 - the reconcile that follows programs it all the same
            log.info("in-place ipcache update failed (%s): reconciling", err)
            return False

    def _new_identities(self, view: _View, cache: FQDNCache, ips: list[str]) -> bool:
        """Under the node lock: the new_identities hook with the agent's datapath, for addresses the revision has
        no /32 of (one that would change identity changes decisions made: a reconcile); False: reconcile."""
        if self.datapath is None or self.new_identities is None or any(view.exact(ip) is not None for ip in ips):
            return False
        try:
            added = self.new_identities(self.datapath(), view.revision, self._programmed(view),
                                        {ip: cache.names_of(ip) for ip in ips})
        except Exception as err:  # noqa: BLE001 - the reconcile that follows programs it all the same
            log.info("in-place identity update failed (%s): reconciling", err)
            return False
        if added is None:
            return False
        # remembered as the in-place ipcache entries are (the view is the reconcile's; the next one has them)
        self._inplace_sets.update((ls, (i, view.revision)) for ls, i in added.items())
        self._inplace.update((ip, view.revision) for ip in ips)
        return True

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
        """Drop what expired (saving what moved on); reprogram when something went. The number removed."""
        with self._learn_mutex:
            cache = self._cache()
            nxt = cache.next_expiry()
            if nxt is None or nxt > (time.time() if now is None else now):
                if self._dirty:
                    self._save()
                return 0
            with self.lock():
                gone = cache.expire(now)
                for e in gone:
                    if not cache.names_of(e.ip):
                        self._inplace.pop(e.ip, None)
                self._save()
                if gone:
                    self.reconcile()
        return len(gone)
