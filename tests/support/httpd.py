"""An HTTP/1.1 server on a sandbox pod for proxy tests: keep-alive, Content-Length and chunked request bodies; every
answer says what arrived (method, path, body length and sha256, the client's address and port) as JSON."""

from __future__ import annotations

import hashlib
import http.client
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .netns import in_netns


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True      # headers and body are two writes: no delayed-ACK wait between them

    def log_message(self, *args):
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _answer(self):
        body = self._body()
        data = json.dumps({"method": self.command, "path": self.path, "len": len(body),
                           "sha256": hashlib.sha256(body).hexdigest(), "client": list(self.client_address),
                           "host": self.headers.get("Host", "")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _answer


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):   # tests reset connections on purpose (403, reloads)
            super().handle_error(request, client_address)


class HttpServer:
    def __init__(self, ns: str, port: int = 80):
        with in_netns(ns):
            self.server = _Server(("0.0.0.0", port), _Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class PodHTTPConnection(http.client.HTTPConnection):
    """An HTTP client connection from inside a pod: every (re)connect opens its socket in the pod's namespace (the
    stock one would reconnect from the caller's namespace after the server closed a kept-alive connection)."""

    def __init__(self, pod, host: str, port: int = 80, timeout: float = 10):
        super().__init__(host, port, timeout=timeout)
        self.pod = pod

    def connect(self):
        s = self.pod.socket()
        s.settimeout(self.timeout)
        s.connect((self.host, self.port))
        self.sock = s
