"""The agent's DNS part: the DNS proxy (node/dns_proxy/server.py) with the node's policy (node/dns_proxy/policy.py), the
expiry of learned addresses, and where the datapath finds the proxy (`<run>/dns-proxy.json`: its port).

The proxy listens on every address of the node namespace (transparent: redirected queries keep their original
destination), UDP and TCP on one port (--tofqdns-proxy-port, Cilium's flag). Its default is a fixed port, not
Cilium's 0 (any free one): the datapath redirects DNS to the port the last agent bound
(node.dns_proxy.policy.proxy_port), or to this default before any agent ran, so that DNS of endpoints with DNS rules
never bypasses the proxy (fail closed: nothing listening there, the datapath drops it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ciliumctl.base import paths, statefile
from ciliumctl.node.dns_proxy.policy import DEFAULT_PROXY_PORT, proxy_info_path, proxy_port

log = logging.getLogger("ciliumctl.node.dns_proxy.service")
EXPIRY_POLL = 1.0        # seconds between looks at the cache's next expiry


@dataclass
class DNSOptions:
    proxy_port: int = DEFAULT_PROXY_PORT   # --tofqdns-proxy-port (0: any free port)
    min_ttl: int = 0                    # --tofqdns-min-ttl (seconds)
    grace: float = 0.0                  # --tofqdns-idle-connection-grace-period (seconds)
    host: str = "0.0.0.0"


def program_new_identities(dp, revision: int, programmed: dict[frozenset[str], int],
                           fqdn_ips: dict[str, set[str]]) -> dict[frozenset[str], int] | None:
    """Learned addresses whose label sets the active revision lacks, without a reconcile (node mode, under the node
    lock): their identities and the policy entries they take part in (policy.resolve.resolve_learned: those alone,
    not the node's whole policy), then their addresses, go into the active revision in place
    (Datapath.add_identities), as Cilium's incremental policy updates; a later reconcile writes the same maps.
    `revision`, `programmed`: the revision the proxy's view describes and the learned label sets it has
    programmed (with their identities); `fqdn_ips`: the new addresses (none has a /32 in the revision yet) with
    their names. Returns every address's label set with its identity; None (nothing written): reconcile."""
    try:
        return _add_in_place(dp, revision, programmed, fqdn_ips)
    except _Reconcile as why:
        log.info("a new label set of a learned address: reconciling (%s)", why)
        return None


class _Reconcile(Exception):
    """Why new label sets are not added in place."""


def _add_in_place(dp, revision: int, programmed: dict[frozenset[str], int],
                  fqdn_ips: dict[str, set[str]]) -> dict[frozenset[str], int]:
    from ciliumctl.endpoints import registry
    from ciliumctl.node import reconcile
    from ciliumctl.node.hostfw import host as hostfw
    from ciliumctl.node.settings import load_settings
    from ciliumctl.policy.resolve import resolve_learned
    from ciliumctl.policy.resolved import Direction, DirectionPolicy, EndpointPolicy, ResolvedState

    if reconcile.cluster_mode():
        raise _Reconcile("cluster mode")
    settings = load_settings()
    if not settings.revision == dp.revision == revision:
        raise _Reconcile(f"the proxy's revision {revision}, the stored {settings.revision} and the datapath's "
                         f"{dp.revision} differ")
    # the inputs of the programmed revision: the node lock keeps them so (a change is followed by its reconcile)
    learned = resolve_learned(registry.load_all(), reconcile.parsed_policies(), settings.mode, reconcile.allocator(),
                              fqdn_ips, **hostfw.resolve_kwargs(settings))
    if any(programmed.get(ls, i) != i for i, ls in learned.identities.items()):
        raise _Reconcile("a programmed learned identity changed")
    new = {i for i, ls in learned.identities.items() if ls not in programmed}
    if not new:
        raise _Reconcile("no new identity")
    if any(a.identity in new for allows in learned.http.values() for a in allows):
        raise _Reconcile("HTTP rules toward it (HAProxy's identity map)")
    if any(a.identity in new for allows in learned.dns.values() for a in allows):
        raise _Reconcile("DNS rules toward it (the proxy's allow list)")
    # each endpoint as the revision enforces it (Datapath.add_identities checks the maps agree), with the entries
    # naming the new identities
    try:
        enforced = {int(k): v for k, v in (statefile.read_json(reconcile.enforcement_path()) or {}).items()}
    except statefile.CorruptStateFile:
        raise _Reconcile("the revision's enforcement record is torn") from None
    if set(enforced) != set(learned.endpoint_identities):
        raise _Reconcile("the endpoints differ from the revision's")
    endpoints = {}
    for ep_id, ident in learned.endpoint_identities.items():
        dirs = []
        for d in (Direction.INGRESS, Direction.EGRESS):
            on = bool(enforced[ep_id].get(d.name.lower()))
            entries = [e for e in learned.entries.get((ep_id, d), ()) if e.identity in new]
            # a direction not default-deny is enforced once it has a deny entry (policy.resolve): the first one
            # changes more than the new identity's entries
            if not on and any(e.deny for e in entries):
                raise _Reconcile("a deny toward it enforces a direction the revision does not")
            dirs.append(DirectionPolicy(on, entries))
        endpoints[ep_id] = EndpointPolicy(ep_id, ident, *dirs)
    state = ResolvedState(revision, dict(learned.identities), dict(learned.ipcache), endpoints, audit=settings.audit)
    hostfw.finish_state(state, settings)
    cookies = statefile.read_json(_cookie_table(), default=None)
    if not dp.add_identities(state, new, learned.ipcache):
        raise _Reconcile("the datapath changed meanwhile")
    _keep_cookies(cookies, revision)
    return {ls: i for i, ls in learned.identities.items()}


def _cookie_table():
    from ciliumctl.datapath.readback import cookie_table_path

    return cookie_table_path()


def _keep_cookies(before: dict | None, revision: int) -> None:
    """Datapath.add_identities writes the cookie table of the state it is given, here the new entries' alone: the
    revision's others go back in (flows name their rules by them; `status --verify` compares the table)."""
    after = statefile.read_json(_cookie_table(), default=None) or {}
    old = (before or {}).get("cookies") or {}
    statefile.write_json(_cookie_table(), {"revision": revision, "cookies": {**old, **(after.get("cookies") or {})}},
                         compact=True, durable=False)


class DNSService:
    def __init__(self, opts: DNSOptions, on_flow: Callable | None = None):
        from ciliumctl.node import reconcile, settings
        from ciliumctl.node.dns_proxy.policy import NodeDNSPolicy
        from ciliumctl.node.dns_proxy.server import DNSProxy

        self.opts = opts
        self.policy = NodeDNSPolicy(reconcile.reconcile, settings.locked, opts.min_ttl, opts.grace)
        self.policy.on_flow = on_flow
        self.policy.datapath = self._datapath
        self.policy.new_identities = program_new_identities
        self._dp = None
        self.proxy = DNSProxy(self.policy, opts.host, opts.proxy_port, upstream=None, transparent=True)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> DNSService:
        host, port = self.proxy.start()
        if port != proxy_port():
            # the datapath must redirect to this port from now on (kept for later restarts)
            from ciliumctl.node import reconcile, settings

            statefile.write_json(proxy_info_path(), {"port": port})
            if (paths.bpffs_dir() / "state").exists():     # installed: else install programs it later
                with settings.locked():
                    reconcile.reconcile()
        self._thread = threading.Thread(target=self._expire_loop, name="fqdn-expiry", daemon=True)
        self._thread.start()
        log.info("DNS proxy on %s:%d (UDP, TCP)", host, port)
        return self

    def _datapath(self):
        """The pinned datapath, kept open for in-place ipcache updates (opened again after a failure)."""
        from ciliumctl.node import reconcile

        if self._dp is None:
            if not (paths.bpffs_dir() / "state").exists():
                raise RuntimeError("the datapath is not installed")
            self._dp = reconcile.open_datapath()
        return self._dp

    def _expire_loop(self) -> None:
        while not self._stop.wait(EXPIRY_POLL):
            try:
                n = self.policy.expire()
                if n:
                    log.info("DNS cache: %d expired address(es) removed", n)
            except Exception as err:  # noqa: BLE001 - the next round tries again; the agent keeps serving
                log.warning("DNS cache expiry: %s", err)
                self._dp = None

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(3)
        self.proxy.stop()      # the port stays in the datapath: DNS is dropped while no proxy listens
        try:
            self.policy.flush()
        except Exception as err:  # noqa: BLE001 - stopping: what was learned is learned again at the next lookups
            log.warning("DNS cache not saved: %s", err)
