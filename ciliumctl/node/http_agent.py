"""The agent's HTTP part: HAProxy (node/haproxy.py) kept in line with the revision reconcile last programmed.

reconcile (whatever process runs it: `policy apply`, the agent) calls prepare() before the datapath is touched:
the entries with rules.http get the proxy port, the configuration is rendered (a rule HAProxy cannot carry, or no
haproxy binary: one line, nothing applied); after the switch save() writes `<state>/http-proxy.json` (the
configuration and the identity map). The agent's HTTPService follows that file: it starts HAProxy when rules
appear, reloads it when the configuration changes, updates the map through the runtime API, stops it when no
rules are left. Without a running agent the redirected connections are refused (fail closed).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from ciliumctl.base import paths, statefile
from ciliumctl.node import haproxy_config as cfg
from ciliumctl.node.haproxy import DEFAULT_PORT, HAProxy, binary
from ciliumctl.policy.resolved import ResolvedState

log = logging.getLogger("ciliumctl.node.http_agent")
POLL = 0.2


def desired_path() -> Path:
    return paths.state_dir() / "http-proxy.json"


def proxy_dir() -> Path:
    return paths.run_dir() / "haproxy"


def prepare(state: ResolvedState, port: int = DEFAULT_PORT) -> None:
    """Before the datapath: redirect the ports with rules.http and check that HAProxy can carry the rules."""
    if not state.http:
        return
    binary()
    cfg.render(state, port, cfg.Paths(str(proxy_dir())))
    cfg.redirect(state, port)


def save(state: ResolvedState, port: int = DEFAULT_PORT) -> None:
    """After the switch: what the agent's HAProxy must run (removed when no rules.http are left)."""
    if not state.http:
        with contextlib.suppress(FileNotFoundError):
            desired_path().unlink()
        return
    statefile.write_json(desired_path(), {
        "revision": state.revision, "port": port,
        "config": cfg.render(state, port, cfg.Paths(str(proxy_dir()))),
        "map": cfg.map_entries(state.ipcache)})


class HTTPService:
    def __init__(self, on_log: Callable[[str], None] | None = None):
        self.on_log = on_log
        self.proxy: HAProxy | None = None
        self._key: tuple | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> HTTPService:
        self._thread = threading.Thread(target=self._loop, name="http-proxy", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync()
            except Exception as err:  # noqa: BLE001 - logged; the next change or poll tries again
                log.error("HTTP proxy: %s", err)
            self._stop.wait(POLL)

    def sync(self) -> None:
        path = desired_path()
        try:
            st = os.stat(path)
            key: tuple | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            key = None
        if key == self._key and (key is None or (self.proxy is not None and self.proxy.proc is not None)):
            return
        self._key = key
        if key is None:
            if self.proxy is not None:
                log.info("HTTP proxy: no rules.http left, stopping HAProxy")
                self.proxy.stop()
                self.proxy = None
            return
        data = statefile.read_json(path, default={}) or {}
        if self.proxy is None or self.proxy.port != data["port"]:
            if self.proxy is not None:
                self.proxy.stop()
            self.proxy = HAProxy(proxy_dir(), data["port"])
        self.proxy.apply_rendered(data["config"], dict(data["map"]))
        log.info("HTTP proxy: revision %s on port %d", data.get("revision"), data["port"])

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(3)
        if self.proxy is not None:
            self.proxy.stop()      # the ports stay redirected: refused while no proxy listens
