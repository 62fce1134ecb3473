"""A port of an agent pod on this machine's loopback, through the API server (pods/portforward), as `kubectl
port-forward` makes it: what `observe --kubeconfig` reads the agents' Hubble API through.

Why this way: the agent serves the Hubble API on its node's 127.0.0.1 only (DaemonSet: `--hubble-listen
127.0.0.1:4244`; the pod has hostNetwork). Nothing listens on a node address without TLS, and the only way in
is the API server, which authenticates the caller and checks RBAC (`create pods/portforward`), then has the
kubelet's runtime dial localhost:4244 in the pod's (= the node's) network namespace. Here each forwarder is one
listener on 127.0.0.1:<free port> that opens one port-forward stream per accepted connection."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from dataclasses import dataclass
from typing import Any

from ciliumctl.base.errors import EnvironmentProblem
from ciliumctl.cluster.kube import KINDS, ApiFailure, Kube
from ciliumctl.cluster.manifests import AGENT_LABELS, NAMESPACE

# Cilium's port of the Hubble API on each node (pkg/hubble/defaults/defaults.go: ServerPort = 4244)
HUBBLE_PORT = 4244
HUBBLE_LISTEN = f"127.0.0.1:{HUBBLE_PORT}"
_OPEN_LOCK = threading.Lock()   # kubernetes.stream swaps ApiClient.request while it opens a websocket


@dataclass(frozen=True)
class AgentPod:
    name: str
    namespace: str
    node: str


def agent_pods(kube: Kube, node: str | None = None, namespace: str = NAMESPACE) -> list[AgentPod]:
    """The running agent pods (one per node), or only the one on `node`. None running: EnvironmentProblem."""
    selector = ",".join(f"{k}={v}" for k, v in AGENT_LABELS.items())
    try:
        pods, _ = kube.list(KINDS["Pod"], namespace, label_selector=selector)
    except ApiFailure as err:
        raise EnvironmentProblem(f"cannot list the agent pods in namespace {namespace}: {err.api_message}") from None
    running = [AgentPod(p["metadata"]["name"], namespace, p["spec"].get("nodeName", "")) for p in pods
               if (p.get("status") or {}).get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]
    if node is not None:
        running = [p for p in running if p.node == node]
    if not running:
        where = f"on node {node}" if node is not None else f"in namespace {namespace}"
        raise EnvironmentProblem(f"no ciliumctl agent pod is running {where} ({kube.host}); install the agent "
                                 "with `ciliumctl install --kubeconfig ...` or check `kubectl get pods -n "
                                 f"{namespace}`")
    return sorted(running, key=lambda p: p.node)


def _quiet_proxy_threads() -> None:
    """kubernetes.stream's proxy thread raises (ECONNRESET) when the stream is cut while data is in flight, e.g.
    `observe ... | head`: that end is ours, not an error to print as a thread traceback."""
    previous = threading.excepthook
    if getattr(previous, "ciliumctl_port_forward", False):
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        name = getattr(args.thread, "name", "") or ""
        if name.startswith("Kubernetes port forward proxy") and isinstance(args.exc_value, OSError):
            return
        previous(args)

    hook.ciliumctl_port_forward = True   # type: ignore[attr-defined]
    threading.excepthook = hook


class PodPortForwarder:
    """127.0.0.1:<free port> -> `port` of `pod`, one port-forward stream per connection. Use as a context
    manager; `last_error` says why the latest stream failed (the API server's or the runtime's words)."""

    def __init__(self, kube: Kube, pod: AgentPod, port: int = HUBBLE_PORT):
        self.kube, self.pod, self.port = kube, pod, port
        self.last_error = ""
        _quiet_proxy_threads()
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))   # loopback only: the caller's own end
        self._listener.listen(16)
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, name=f"port-forward-{pod.name}", daemon=True)
        self._thread.start()

    def __enter__(self) -> PodPortForwarder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _open(self) -> Any:   # kubernetes.stream.ws_client.PortForward
        from kubernetes import client
        from kubernetes.stream import portforward

        core = client.CoreV1Api(self.kube.api)
        with _OPEN_LOCK:
            return portforward(core.connect_get_namespaced_pod_portforward, self.pod.name, self.pod.namespace,
                               ports=str(self.port))

    def _serve(self, conn: socket.socket) -> None:
        try:
            forward = self._open()
        except Exception as err:   # refused (RBAC), pod gone, API server away: the client sees a closed stream
            self.last_error = _api_words(str(err))
            conn.close()
            return
        remote = forward.socket(self.port)
        try:
            _pump(conn, remote)
        finally:
            said = forward.error(self.port)
            if said:
                self.last_error = said.strip()
            with contextlib.suppress(OSError):
                conn.close()
            forward.close()


def _api_words(text: str) -> str:
    """The Status message in a failed websocket handshake ("Handshake status 403 ... {"kind":"Status",...}")."""
    import json

    start = text.find('{"kind":"Status"')
    if start < 0:
        return text.strip()
    try:
        status = json.loads(text[start:])
    except ValueError:
        return text.strip()
    return f"{status.get('message', '')} ({status.get('code', '')} {status.get('reason', '')})"


def _pump(a: Any, b: Any) -> None:   # a socket, and the port-forward's socket-like end
    """Copy both ways until either side ends."""
    socks = {a.fileno(): (a, b), b.fileno(): (b, a)}
    while True:
        ready, _, _ = select.select(list(socks), [], [])
        for fd in ready:
            src, dst = socks[fd]
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data:
                return
            dst.sendall(data)
