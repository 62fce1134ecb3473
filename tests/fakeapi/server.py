"""An in-process fake Kubernetes API server over plain HTTP, for tests only: the faults a real kube-apiserver does
not give on demand (tests/cluster; everything else is tested on the real one, tests/k8s).

The official `kubernetes` client talks to it unchanged: point a kubeconfig (write_kubeconfig) or a
Configuration(host=server.url) at it. Paths are the real ones (/api/v1/..., namespaced and cluster-scoped) for
get, list, watch, create, replace and delete. Watches stream JSON lines over a chunked HTTP/1.1 response, as the
real server does.

Test hooks: `store` (direct access), `compact()` (watches from older resourceVersions get 410 Gone),
`drop_watches()` (cut every open watch stream, like an API server restart; `watches_open` says when there is one),
`fail_next()` (inject HTTP errors).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from .store import ApiError, Store, field_matcher, label_matcher


class _Route:
    def __init__(self, group, version, plural, namespace="", name=""):
        self.group, self.version, self.plural, self.namespace, self.name = group, version, plural, namespace, name


def _route(path: str) -> _Route:
    parts = [unquote(p) for p in path.strip("/").split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 3:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 4:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
    namespace = ""
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    if len(rest) > 2:
        raise ApiError(404, "NotFound", f"the fake serves no subresources ({path})")
    return _Route(group, version, rest[0], namespace, rest[1] if len(rest) > 1 else "")


class FakeApiServer:
    def __init__(self, max_history: int = 0, bookmark_interval: float = 1.0, host: str = "127.0.0.1"):
        self.store = Store(max_history=max_history)
        self.host = host
        self.bookmark_interval = bookmark_interval
        self._failures: list[tuple[int, int, str | None, str | None]] = []
        self._watch_epoch = 0
        self.watches_open = 0   # watches that drop_watches() would cut now (a request counted may not be one yet)
        self.retry_after = 1    # seconds, on an injected 429
        self._stopping = False
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # ---- lifecycle

    def start(self) -> FakeApiServer:
        server = self

        class Handler(_Handler):
            fake = server

        self._httpd = ThreadingHTTPServer((self.host, 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fakeapi", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        with self.store.cond:
            self.store.cond.notify_all()
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def write_kubeconfig(self, path: str | Path, context: str = "fake", namespace: str = "default") -> Path:
        path = Path(path)
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": context,
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [{"name": context, "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
        }
        path.write_text(json.dumps(config, indent=1))
        return path

    # ---- test hooks

    def compact(self) -> int:
        return self.store.compact()

    def drop_watches(self) -> None:
        with self.store.cond:
            self._watch_epoch += 1
            self.store.cond.notify_all()

    def fail_next(self, count: int = 1, status: int = 500, method: str | None = None,
                  path_contains: str | None = None) -> None:
        with self._lock:
            self._failures.append((count, status, method, path_contains))

    def _injected_failure(self, method: str, path: str) -> int | None:
        with self._lock:
            for i, (count, status, m, p) in enumerate(self._failures):
                if (m is None or m == method) and (p is None or p in path):
                    if count <= 1:
                        self._failures.pop(i)
                    else:
                        self._failures[i] = (count - 1, status, m, p)
                    return status
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    fake: FakeApiServer = None  # set by FakeApiServer.start

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_PUT(self):
        self._handle("PUT")

    def do_DELETE(self):
        self._handle("DELETE")

    # ---- plumbing

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, code: int, value) -> None:
        data = json.dumps(value).encode()
        self.send_response(code)
        if code == 429:   # as the real server's priority and fairness says it (its value is 1)
            self.send_header("Retry-After", str(self.fake.retry_after))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        raw = self._body()
        fake = self.fake
        try:
            injected = fake._injected_failure(method, url.path)
            if injected:
                reason = {429: "TooManyRequests"}.get(injected, "InternalError" if injected >= 500 else "BadRequest")
                raise ApiError(injected, reason, f"injected failure {injected}")
            route = _route(url.path)
            store = fake.store
            rt = store.resource_type(route.group, route.version, route.plural)
            if method == "GET" and not route.name:
                if query.get("watch") in ("true", "1"):
                    return self._watch(rt, route.namespace, query)
                items, rv = store.list(rt, route.namespace, query.get("labelSelector"), query.get("fieldSelector"))
                return self._send(200, {"kind": rt.kind + "List", "apiVersion": rt.group_version,
                                        "metadata": {"resourceVersion": rv}, "items": items})
            if method == "GET":
                return self._send(200, store.get(rt, route.namespace, route.name))
            if method == "POST" and not route.name:
                return self._send(201, store.create(rt, route.namespace, self._json(raw)))
            if method == "PUT" and route.name:
                return self._send(200, store.update(rt, route.namespace, route.name, self._json(raw)))
            if method == "DELETE" and route.name:
                return self._send(200, store.delete(rt, route.namespace, route.name))
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on {url.path}")
        except ApiError as err:
            self._send(err.code, err.status())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _json(self, raw: bytes):
        try:
            return json.loads(raw.decode() or "{}")
        except ValueError as err:
            raise ApiError(400, "BadRequest", f"invalid JSON body: {err}") from None

    # ---- watch

    def _chunk(self, value) -> None:
        data = (json.dumps(value) + "\n").encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _watch(self, rt, namespace: str, query: dict) -> None:
        fake, store = self.fake, self.fake.store
        labels_ok, fields_ok = label_matcher(query.get("labelSelector")), field_matcher(query.get("fieldSelector"))
        deadline = time.monotonic() + float(query.get("timeoutSeconds") or 1800)
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")

        def wanted(obj):
            meta = obj["metadata"]
            return ((not namespace or meta.get("namespace") == namespace)
                    and labels_ok(meta.get("labels") or {}) and fields_ok(obj))

        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        rv_param = query.get("resourceVersion") or ""
        with store.cond:
            epoch = fake._watch_epoch
            fake.watches_open += 1
            if rv_param in ("", "0"):
                items, rv = store.list(rt, namespace, query.get("labelSelector"), query.get("fieldSelector"))
                pending = [{"type": "ADDED", "object": o} for o in items]
                last = int(rv)
            else:
                pending, last = [], int(rv_param)
        last_bookmark = time.monotonic()
        try:
            while True:
                for event in pending:
                    self._chunk(event)
                pending = []
                with store.cond:
                    while True:
                        if fake._stopping or fake._watch_epoch != epoch:
                            # cut the stream without the final chunk: the client sees a broken response
                            self.close_connection = True
                            self.connection.shutdown(socket.SHUT_RDWR)
                            return
                        try:
                            events = store.events_since(last, rt.key)
                        except ApiError as err:
                            pending = [{"type": "ERROR", "object": err.status()}]
                            break
                        if events:
                            last = events[-1].rv
                            pending = [{"type": e.type, "object": e.obj} for e in events if wanted(e.obj)]
                            if pending:
                                break
                            continue
                        now = time.monotonic()
                        if now >= deadline:
                            break
                        if bookmarks and now - last_bookmark >= fake.bookmark_interval:
                            last, last_bookmark = store.rv, now
                            pending = [{"type": "BOOKMARK", "object": {
                                "kind": rt.kind, "apiVersion": rt.group_version,
                                "metadata": {"resourceVersion": str(store.rv)}}}]
                            break
                        store.cond.wait(0.1)
                if not pending:
                    break
                if pending[0]["type"] == "ERROR":
                    self._chunk(pending[0])
                    break
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True
        finally:
            with store.cond:
                fake.watches_open -= 1
