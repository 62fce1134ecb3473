"""The web server of `ciliumctl ui`: the live service map from the agent's Observer API (or any Hubble server).

One thread follows GetFlows (flows.client, the one Observer client) into a flows.servicemap.ServiceMap; HTTP
handlers (stdlib ThreadingHTTPServer) serve the page and its assets from the package (ui_static/, built from npm
by scripts/build_ui.sh; nothing is fetched at run time), a snapshot (/api/map), the changes a few times a second
as Server-Sent Events (/api/events) and the flow table of an edge with hubble observe's filter flags (/api/flows).

Loopback only: the server has no TLS, so it never listens beyond 127.0.0.1 / ::1, and it answers only requests
whose Host is its own loopback address (a page elsewhere cannot read the flows by DNS rebinding). The flows are
root's (the agent's socket is root-only) and loopback is open to every user of the machine, so every request also
carries a token: the URL printed at start has it, the page turns it into a cookie (as Jupyter does)."""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
import shlex
import socket
import threading
import time
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlsplit

from ciliumctl.base.errors import CiliumctlError, EnvironmentProblem, UsageError
from ciliumctl.flows import client, servicemap

DEFAULT_LISTEN = "127.0.0.1:12000"   # hubble-ui's port (`cilium hubble ui` forwards to 12000)
TICK = 0.25                          # seconds between two updates of an open page
KEEPALIVE = 10.0                     # an SSE comment at least this often, so a closed page is noticed
# the whole buffer first (a Hubble server sends what it has when asked for more), then follow
BACKLOG = 1 << 20

# what the page may load: path -> (file under ui_static, content type)
ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/app.css": ("app.css", "text/css; charset=utf-8"),
    **{f"/static/vendor/{name}": (f"vendor/{name}", "text/javascript; charset=utf-8")
       for name in ("cytoscape.min.js", "layout-base.js", "cose-base.js", "cytoscape-fcose.js")},
}
# the page runs only its own scripts: even a name that got through unescaped could not run code. Cytoscape sets
# a style element of its own, hence 'unsafe-inline' for styles only.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; "
       "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def parse_listen(text: str) -> tuple[str, int]:
    """--listen HOST:PORT -> (address, port); loopback only (127.0.0.0/8, ::1, localhost), port 0 = any free."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise UsageError(f"--listen {text!r}: use HOST:PORT, e.g. {DEFAULT_LISTEN}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if host in ("localhost", ""):
        host = "127.0.0.1" if host == "localhost" else ""
    try:
        loopback = bool(host) and ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise UsageError(f"--listen {text!r}: ciliumctl ui serves on loopback only (127.0.0.1 or [::1]: it has no "
                         "TLS); reach it from another machine through an SSH tunnel (ssh -L)")
    return host, int(port_text)


def load_assets() -> dict[str, tuple[bytes, str]]:
    """The page's files from the package; a missing one means the UI build step did not run."""
    root = resources.files("ciliumctl.node").joinpath("ui_static")
    out = {}
    for path, (name, ctype) in ASSETS.items():
        res = root.joinpath(*name.split("/"))
        try:
            out[path] = (res.read_bytes(), ctype)
        except OSError:
            raise EnvironmentProblem(f"the UI's file {name} is missing from the package (ciliumctl/node/ui_static); "
                                     "build it with scripts/build_ui.sh (npm), or run `make setup`") from None
    return out


class Feeder:
    """Follows the Observer API into the map; its state is shown on the page."""

    def __init__(self, server: str, smap: servicemap.ServiceMap):
        self.server, self.map = server, smap
        self.state = "connecting"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ui-flows", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()   # the thread ends with the stream; it is a daemon, so it never holds the process

    def _run(self) -> None:
        from ciliumctl.flows.pb.observer import observer_pb2 as opb

        req = opb.GetFlowsRequest(follow=True, number=BACKLOG)
        while not self._stop.is_set():
            last_ns = None
            try:
                client.server_status(self.server)
                self.state = "connected"
                for batch in client.stream_batches(self.server, req, reconnect=True, status=_State(self)):
                    self.state = "connected"
                    self.map.add_many(batch)
                    for r in reversed(batch):
                        if r.HasField("flow"):
                            last_ns = r.flow.time.ToNanoseconds()
                            break
                    if self._stop.is_set():
                        return
                self.state = "the server ended the stream; asking again"
            except CiliumctlError as err:
                self.state = f"error: {err}"
            except Exception as err:   # a bug or an unforeseen server answer: shown on the page, then retried
                self.state = f"error: {type(err).__name__}: {err}"
            if last_ns is not None:   # resume after what the map has, never counting a flow twice
                req = opb.GetFlowsRequest(follow=True)
                req.since.FromNanoseconds(last_ns + 1)
            self._stop.wait(2.0)


class _State:
    """What stream_batches says while it reconnects ("connection to X lost; reconnecting"), shown on the page."""

    def __init__(self, feeder: Feeder):
        self.feeder = feeder

    def write(self, text: str) -> None:
        self.feeder.state = text.strip()

    def flush(self) -> None:
        pass


class UiServer:
    def __init__(self, listen: str, server: str):
        self.host, port = parse_listen(listen)
        self.assets = load_assets()
        self.map = servicemap.ServiceMap()
        self.feeder = Feeder(server, self.map)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET

        class _Server(ThreadingHTTPServer):
            address_family = family
            daemon_threads = True

        try:
            self.httpd = _Server((self.host, port), _handler(self))
        except OSError as err:
            raise EnvironmentProblem(f"--listen {listen}: cannot listen there: {err.strerror}; choose another port "
                                     "(--listen 127.0.0.1:0 takes any free one)") from None
        self.port = self.httpd.server_address[1]
        shown = f"[{self.host}]" if family == socket.AF_INET6 else self.host
        self.token = secrets.token_urlsafe(24)
        self.cookie = f"ciliumctl_ui_{self.port}"   # cookies do not tell ports apart: the name does
        self.url = f"http://{shown}:{self.port}/?token={self.token}"
        self.allowed_hosts = {f"{shown}:{self.port}", f"localhost:{self.port}"}
        self.closed = threading.Event()

    def serve_forever(self) -> None:
        self.feeder.start()
        try:
            self.httpd.serve_forever(poll_interval=0.2)
        finally:
            self.close()

    def close(self) -> None:
        self.closed.set()
        self.feeder.stop()
        self.httpd.server_close()

    def status(self) -> dict:
        return {"server": self.feeder.server, "state": self.feeder.state}


def _handler(ui: UiServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "ciliumctl-ui"

        def log_message(self, format, *args):   # noqa: A002  (http.server's name) - quiet: the page polls
            pass

        def _send(self, code: int, body: bytes, ctype: str, cache: bool = False) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Security-Policy", CSP)
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header("Cache-Control", "max-age=300" if cache else "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, obj) -> None:
            self._send(code, json.dumps(obj, separators=(",", ":")).encode(), "application/json")

        def _token_ok(self, query) -> bool:
            given = (query.get("token") or [""])[0]
            if not given:
                try:
                    morsel = SimpleCookie(self.headers.get("Cookie", "")).get(ui.cookie)
                except CookieError:
                    morsel = None
                given = morsel.value if morsel is not None else ""
            return hmac.compare_digest(given.encode(), ui.token.encode())

        def do_GET(self):   # noqa: N802  (http.server's name)
            if self.headers.get("Host", "") not in ui.allowed_hosts:
                self._json(403, {"error": "this server answers only on its own loopback address"})
                return
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            if not self._token_ok(query):
                self._json(403, {"error": "open the address `ciliumctl ui` printed: it carries the page's token"})
                return
            if url.path == "/" and "token" in query:   # the page's own requests carry it as a cookie
                self.send_response(303)
                self.send_header("Location", "/")
                self.send_header("Set-Cookie", f"{ui.cookie}={ui.token}; Path=/; HttpOnly; SameSite=Strict")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif url.path in ui.assets:
                body, ctype = ui.assets[url.path]
                self._send(200, body, ctype, cache=url.path != "/")
            elif url.path == "/api/map":
                self._json(200, {**ui.map.delta(0), "status": ui.status()})
            elif url.path == "/api/flows":
                self._flows(query)
            elif url.path == "/api/events":
                since = (query.get("since") or ["0"])[0]
                self._events(int(since) if since.isdigit() else 0)   # else: everything
            else:
                self._json(404, {"error": f"no such page: {url.path}"})

        def _flows(self, query) -> None:
            edge = (query.get("edge") or [None])[0] or None
            text = (query.get("filter") or [""])[0]
            limit = (query.get("limit") or ["100"])[0]
            if not limit.isdigit():
                self._json(400, {"error": f"limit {limit!r}: a number of flows"})
                return
            try:
                args = shlex.split(text)
                rows = ui.map.flow_rows(edge, args, min(int(limit), 1000))
            except ValueError as err:   # shlex: an open quote
                self._json(400, {"error": f"filter {text!r}: {err}"})
                return
            except UsageError as err:
                self._json(400, {"error": str(err)})
                return
            self._json(200, {"edge": edge, "flows": rows})

        def _events(self, since: int) -> None:
            """Server-Sent Events: one `delta` message per tick with what changed since the last one."""
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Security-Policy", CSP)
            self.end_headers()
            last_sent, last_status = 0.0, None
            try:
                while not ui.closed.is_set():
                    delta = ui.map.delta(since)
                    status = ui.status()
                    if (delta["version"] != since or status != last_status
                            or time.monotonic() - last_sent > KEEPALIVE):
                        since, last_status = delta["version"], status
                        delta["status"] = status
                        msg = f"event: delta\ndata: {json.dumps(delta, separators=(',', ':'))}\n\n"
                        self.wfile.write(msg.encode())
                        self.wfile.flush()
                        last_sent = time.monotonic()
                    ui.closed.wait(TICK)
            except (BrokenPipeError, ConnectionResetError):
                pass   # the page was closed
            self.close_connection = True

    return Handler


__all__ = ["UiServer", "parse_listen", "DEFAULT_LISTEN"]
