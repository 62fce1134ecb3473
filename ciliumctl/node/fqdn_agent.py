"""The agent's DNS part: the DNS proxy (node/dns_proxy.py) with the node's policy (node/dns_policy.py), the
expiry of learned addresses, and where the datapath finds the proxy (`<run>/dns-proxy.json`: its port).

The proxy listens on every address of the node namespace (transparent: redirected queries keep their original
destination), UDP and TCP on one port (--tofqdns-proxy-port, Cilium's flag; 0 = a free port).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ciliumctl.base import paths, statefile

log = logging.getLogger("ciliumctl.node.fqdn_agent")
EXPIRY_POLL = 1.0        # seconds between looks at the cache's next expiry


@dataclass
class DNSOptions:
    proxy_port: int = 0                 # --tofqdns-proxy-port
    min_ttl: int = 0                    # --tofqdns-min-ttl (seconds)
    grace: float = 0.0                  # --tofqdns-idle-connection-grace-period (seconds)
    host: str = "0.0.0.0"


def proxy_info_path() -> Path:
    return paths.run_dir() / "dns-proxy.json"


def proxy_port() -> int | None:
    """The running proxy's port (None when no agent serves one)."""
    data = statefile.read_json(proxy_info_path(), default=None)
    return int(data["port"]) if isinstance(data, dict) and data.get("port") else None


class DNSService:
    def __init__(self, opts: DNSOptions, on_flow: Callable | None = None):
        from ciliumctl.node import reconcile, settings
        from ciliumctl.node.dns_policy import NodeDNSPolicy
        from ciliumctl.node.dns_proxy import DNSProxy

        self.opts = opts
        self.policy = NodeDNSPolicy(reconcile.reconcile, settings.locked, opts.min_ttl, opts.grace)
        self.policy.on_flow = on_flow
        self.proxy = DNSProxy(self.policy, opts.host, opts.proxy_port, upstream=None, transparent=True)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> DNSService:
        host, port = self.proxy.start()
        statefile.write_json(proxy_info_path(), {"port": port})
        self._thread = threading.Thread(target=self._expire_loop, name="fqdn-expiry", daemon=True)
        self._thread.start()
        log.info("DNS proxy on %s:%d (UDP, TCP)", host, port)
        return self

    def _expire_loop(self) -> None:
        while not self._stop.wait(EXPIRY_POLL):
            try:
                n = self.policy.expire()
                if n:
                    log.info("DNS cache: %d expired address(es) removed", n)
            except Exception as err:  # noqa: BLE001 - the next round tries again; the agent keeps serving
                log.warning("DNS cache expiry: %s", err)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(3)
        self.proxy.stop()
        with contextlib.suppress(FileNotFoundError):
            proxy_info_path().unlink()
