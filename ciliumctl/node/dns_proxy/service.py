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
from dataclasses import dataclass, replace

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


def program_new_identities(dp, learned: dict[frozenset[str], int], ipcache: dict[str, int],
                           fqdn_ips: dict[str, set[str]]) -> bool:
    """Learned addresses whose label sets the active revision lacks, without a reconcile (node mode, under the node
    lock, the cache saved): the revision is resolved again as reconcile would (same number, same inputs), and when
    it differs from the programmed one only by new learned identities and the ipcache entries of learned
    addresses, those identities' policy entries and then the addresses go into the active revision in place
    (Datapath.add_identities), as Cilium's incremental policy updates; a later reconcile writes the same maps.
    False (nothing written): reconcile. `learned`, `ipcache`: what dns-policy.json says the revision has;
    `fqdn_ips`: the learned addresses to resolve with: the new ones and one of each label set in `learned` (what
    decides the identities and their entries; the revision's other learned addresses are left out)."""
    why = _not_in_place(dp, learned, ipcache, fqdn_ips)
    if why:
        log.info("a new label set of a learned address: reconciling (%s)", why)
        return False
    return True


def _not_in_place(dp, learned: dict[frozenset[str], int], ipcache: dict[str, int],
                  fqdn_ips: dict[str, set[str]]) -> str:
    """program_new_identities' work: "" when done, else why not (nothing written)."""
    from ciliumctl.endpoints import registry
    from ciliumctl.node import reconcile
    from ciliumctl.node.settings import load_settings
    from ciliumctl.policy import store

    if reconcile.cluster_mode():
        return "cluster mode"
    if not ipcache:
        return "no revision saved for the proxy"
    settings = load_settings()
    if settings.revision != dp.revision:
        return f"the datapath's revision {dp.revision} is not the stored {settings.revision}"
    endpoints = registry.load_all()
    state = reconcile.resolve_state(endpoints, store.load_all(), settings, reconcile.allocator(), settings.revision,
                                    fqdn_ips)
    fqdn_ids = {i: ls for i, ls in state.identities.items() if any(x.startswith("fqdn:") for x in ls)}
    new = {i for i, ls in fqdn_ids.items() if ls not in learned}
    if not new:
        return "no new identity"
    if any(fqdn_ids.get(i) != ls for ls, i in learned.items()):
        return "a programmed learned identity changed"
    if any(a.identity in new for allows in state.http.values() for a in allows):
        return "HTTP rules toward it (HAProxy's identity map)"
    programmed = set(learned.values())
    if any(state.ipcache.get(p) != i for p, i in ipcache.items() if not (i in programmed and p not in state.ipcache)):
        return "the ipcache changed otherwise (an expiry, a policy)"
    added = {p: i for p, i in state.ipcache.items() if p not in ipcache}
    if any(i not in fqdn_ids or not p.endswith("/32") for p, i in added.items()):
        return "other ipcache entries added"
    if not dp.add_identities(state, new, added):
        return "the datapath changed meanwhile"
    # the proxy's view: the revision's ipcache (the learned addresses left out of this resolve too) and the added
    reconcile.save_dns_policy(replace(state, ipcache={**ipcache, **added}), endpoints)
    return ""


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
