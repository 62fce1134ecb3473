"""The agent's HTTP part: HAProxy (node/http_proxy/haproxy.py) kept in line with the revision reconcile last programmed.

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
import selectors
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ciliumctl.base import paths, statefile
from ciliumctl.node.http_proxy import config as cfg
from ciliumctl.node.http_proxy.haproxy import DEFAULT_PORT, HAProxy, binary
from ciliumctl.policy.resolved import ResolvedState

if TYPE_CHECKING:
    from ciliumctl.flows.http import HTTPEvent

log = logging.getLogger("ciliumctl.node.http_proxy.service")
POLL = 0.2
# After a batch of log lines the reader waits this long before the next read, so that lines gather: a wake-up per
# line cost the agent ~10-30 us per request (bench_l7); L7 flows show up at most this much later.
LOG_BATCH_WINDOW = 0.005
RETRY = 5.0


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


def redirect_only(state: ResolvedState, port: int = DEFAULT_PORT) -> None:
    """The ports with rules.http to the proxy's port without a configuration for it (cluster mode, when prepare
    failed): they refuse connections (fail closed), never pass them unfiltered."""
    cfg.redirect(state, port)
    with contextlib.suppress(FileNotFoundError):
        desired_path().unlink()


def save(state: ResolvedState, port: int = DEFAULT_PORT) -> None:
    """After the switch: what the agent's HAProxy must run (removed when no rules.http are left)."""
    if not state.http:
        with contextlib.suppress(FileNotFoundError):
            desired_path().unlink()
        return
    statefile.write_json(desired_path(), {
        "revision": state.revision, "port": port,
        "config": cfg.render(state, port, cfg.Paths(str(proxy_dir()))),
        "map": cfg.map_entries(state.ipcache),
        "acls": {name: sorted(lines) for name, lines in cfg.acl_entries(state).items()}})


def parse_log(line: str) -> HTTPEvent | None:
    """One of HAProxy's log lines (haproxy_config.LOG_FORMAT) as an HTTPEvent; None for anything else."""
    from ciliumctl.flows.http import HTTPEvent  # protobuf: only where flows are made

    parts = line.rstrip("\n").split("|", cfg.LOG_FIELDS - 1)
    if len(parts) != cfg.LOG_FIELDS:
        return None
    ts, ci, cp, fi, fp, src_id, dst_id, direction, status, tr, _ta, method, version, host, verdict, uri = parts
    try:
        latency_ms = int(tr)
        return HTTPEvent(time_ns=int(ts) * 1_000_000, client=(ci, int(cp)), server=(fi, int(fp)), method=method,
                         path=uri, protocol=version, host=host.strip("{}"), code=int(status),
                         latency_ns=max(latency_ms, 0) * 1_000_000, allowed=verdict == "FORWARDED",
                         ingress=direction == "ingress", client_identity=int(src_id or 0),
                         server_identity=int(dst_id or 0))
    except ValueError:
        return None


class HTTPService:
    def __init__(self, on_flow: Callable[[HTTPEvent], None] | None = None):
        self.on_flow = on_flow
        self.proxy: HAProxy | None = None
        self._key: tuple | None = None
        self._retry_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._log_thread: threading.Thread | None = None
        self._log: socket.socket | None = None

    def start(self) -> HTTPService:
        self.listen_log()
        self._thread = threading.Thread(target=self._loop, name="http-proxy", daemon=True)
        self._thread.start()
        return self

    def listen_log(self) -> None:
        """Where HAProxy's log ring delivers (config.py: a unix stream socket; the old and the new worker of a reload
        each connect), read in a thread of its own."""
        path = cfg.Paths(str(proxy_dir())).log
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self._log = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._log.bind(path)
        os.chmod(path, 0o600)
        self._log.listen(8)
        self._log_thread = threading.Thread(target=self._read_log, name="http-proxy-log", daemon=True)
        self._log_thread.start()

    def _read_log(self) -> None:
        """Lines as they come, many per read: one recv and one split for a batch, not a wake-up per request."""
        assert self._log is not None
        sel = selectors.DefaultSelector()
        sel.register(self._log, selectors.EVENT_READ)
        partial: dict[socket.socket, bytes] = {}
        while not self._stop.is_set():
            ready = sel.select(0.5)
            for key, _ in ready:
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._log:
                    with contextlib.suppress(OSError):
                        conn, _ = sock.accept()
                        sel.register(conn, selectors.EVENT_READ)
                        partial[conn] = b""
                    continue
                try:
                    data = sock.recv(1 << 18)
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(sock)
                    sock.close()
                    partial.pop(sock, None)
                    continue
                *lines, partial[sock] = (partial[sock] + data).split(b"\n")
                self._take(lines)
            if ready:
                self._stop.wait(LOG_BATCH_WINDOW)
        for sock in partial:
            sock.close()
        sel.close()

    def _take(self, lines: list[bytes]) -> None:
        if self.on_flow is None:
            return
        for line in lines:
            event = parse_log(line.decode(errors="replace"))
            if event is None:
                continue
            try:
                self.on_flow(event)
            except Exception as err:  # noqa: BLE001 - a flow lost, the proxy's log keeps being read
                log.warning("HTTP flow: %s", err)

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
        if key == self._key and (key is None or (self.proxy is not None and self.proxy.proc is not None)
                                 or time.monotonic() < self._retry_at):
            return
        self._retry_at = time.monotonic() + RETRY     # a failed start is tried again after this, not every poll
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
        self.proxy.apply_rendered(data["config"], dict(data["map"]),
                                  {name: set(lines) for name, lines in data.get("acls", {}).items()})
        log.info("HTTP proxy: revision %s on port %d", data.get("revision"), data["port"])

    def ready(self) -> bool:
        """HAProxy runs and answers on its admin socket (its listener is bound by then)."""
        proxy = self.proxy
        return proxy is not None and proxy.proc is not None and proxy.admin_ready()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(3)
        if self._log_thread is not None:
            self._log_thread.join(3)
        if self._log is not None:
            self._log.close()
        if self.proxy is not None:
            self.proxy.stop()      # the ports stay redirected: refused while no proxy listens
