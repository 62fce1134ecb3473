"""The node agent: reads the datapath's event ring buffer into the flow ring, serves Hubble's Observer API
(unix socket, optionally TCP), Prometheus metrics, and the CNI plugin's socket.

`ciliumctl agent run` runs it in the foreground (what a DaemonSet or a supervisor runs);
start_background() / stop_background() / status() supervise it as a background process with a pid file and a
log under paths.run_dir() (what `ciliumctl install` / `uninstall` and `ciliumctl agent start|stop|status` use).
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ciliumctl.base import paths
from ciliumctl.base.errors import EnvironmentProblem, UsageError

if TYPE_CHECKING:   # the parts are imported when started: `agent status` stays light
    from ciliumctl.flows.metrics import MetricsServer
    from ciliumctl.flows.server import ObserverServer
    from ciliumctl.node.cluster_sync import ClusterNode
    from ciliumctl.node.cni.server import CniServer
    from ciliumctl.node.dns_proxy.service import DNSOptions, DNSService
    from ciliumctl.node.http_proxy.service import HTTPService

log = logging.getLogger("ciliumctl.node.agent")

DEFAULT_FLOW_BUFFER = 4095
DEFAULT_METRICS_LISTEN = "127.0.0.1:9965"
LOST_POLL_SECONDS = 0.5


@dataclass
class AgentOptions:
    flow_buffer_size: int = DEFAULT_FLOW_BUFFER
    hubble_socket: Path | None = None           # default paths.hubble_socket()
    hubble_listen: str | None = None            # e.g. 127.0.0.1:4244; off by default
    metrics_listen: str | None = DEFAULT_METRICS_LISTEN   # None or "" = off
    node_name: str | None = None
    cni_socket: Path | None = None              # default paths.agent_socket(); serve_cni=False to skip
    serve_cni: bool = True
    kubeconfig: str | None = None               # cluster mode (also $KUBECONFIG or CILIUMCTL_CLUSTER=in-cluster)
    context: str | None = None
    dns: DNSOptions | None = None               # the DNS proxy (node.dns_proxy.service); None = defaults

    def validate(self) -> None:
        if self.flow_buffer_size < 1:
            raise UsageError(f"--flow-buffer-size {self.flow_buffer_size}: must be at least 1")
        for flag, value in (("--hubble-listen", self.hubble_listen), ("--metrics-listen", self.metrics_listen)):
            if value:
                host, sep, port = value.rpartition(":")
                if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
                    raise UsageError(f"{flag} {value!r}: expected HOST:PORT, e.g. 127.0.0.1:4244")


def pid_file() -> Path:
    return paths.run_dir() / "agent.pid"


def log_file() -> Path:
    return paths.run_dir() / "agent.log"


def _lock_file() -> Path:
    return paths.run_dir() / "agent.lock"


class _IfNames:
    """ifindex -> interface name in the node namespace, looked up lazily and cached for a while."""

    def __init__(self, ttl: float = 30.0):
        self.ttl = ttl
        self._cache: dict[int, tuple[str, float]] = {}

    def get(self, ifindex: int) -> str | None:
        hit = self._cache.get(ifindex)
        now = time.monotonic()
        if hit is not None and now - hit[1] < self.ttl:
            return hit[0]
        try:
            name = socket.if_indextoname(ifindex)
        except OSError:
            name = ""
        self._cache[ifindex] = (name, now)
        return name


class Agent:
    def __init__(self, opts: AgentOptions | None = None):
        from ciliumctl.flows.meta import MetaWatcher
        from ciliumctl.flows.server import FlowSource
        from ciliumctl.flows.store import FlowStore

        self.opts = opts or AgentOptions()
        self.opts.validate()
        self.store = FlowStore(self.opts.flow_buffer_size)
        self.meta = MetaWatcher()
        self.node_name = self.opts.node_name or os.environ.get("CILIUMCTL_NODE_NAME") or socket.gethostname()
        self.socket_path = self.opts.hubble_socket or paths.hubble_socket()
        self.source = FlowSource(self.store, self.meta, node_name=self.node_name,
                                 address=f"unix://{self.socket_path}", ifnames=_IfNames())
        self.stop_event = threading.Event()
        self.ready = threading.Event()
        self.server: ObserverServer | None = None
        self.metrics: MetricsServer | None = None
        self.cni: CniServer | None = None
        self.cluster: ClusterNode | None = None
        self.devices: list[str] | None = None      # NodePort devices the agent attached (DaemonSet only)
        self.dns: DNSService | None = None
        self.http: HTTPService | None = None
        self._lock_fd: int | None = None
        self._reader_thread: threading.Thread | None = None
        self.datapath_attached = False
        self.events_pin_inode: int | None = None   # of the ring buffer pin being read
        from ciliumctl.node.agent_budget import CpuBudget

        self.budget = CpuBudget()   # its CPU per 10k new connections/s (status, metrics)

    # ---- lifecycle

    def _take_lock(self) -> None:
        try:
            paths.run_dir().mkdir(parents=True, exist_ok=True)
            fd = os.open(_lock_file(), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as err:
            raise EnvironmentProblem(f"run directory {paths.run_dir()}: {err.strerror} (the agent needs root, or "
                                     "set CILIUMCTL_RUN_DIR to a writable directory)") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            pid = _read_pid()
            raise EnvironmentProblem(f"a ciliumctl agent is already running (pid {pid or '?'}) for "
                                     f"{paths.run_dir()}; stop it with `ciliumctl agent stop`") from None
        self._lock_fd = fd
        pid_file().write_text(f"{os.getpid()}\n")

    def start(self) -> None:
        """Start every part; returns once the API socket accepts connections."""
        from ciliumctl.base.netns import enter_node_netns
        from ciliumctl.flows.server import ObserverServer

        enter_node_netns()  # before any thread: threads inherit the network namespace
        self._take_lock()
        try:
            self._heal_node()
            try:
                self.server = ObserverServer(self.source, self.socket_path, self.opts.hubble_listen)
                self.server.start()
            except (OSError, RuntimeError) as err:
                raise EnvironmentProblem(f"cannot serve the Hubble API on {self.socket_path}"
                                         f"{' and ' + self.opts.hubble_listen if self.opts.hubble_listen else ''}: "
                                         f"{err}; is another agent or program using it?") from None
            if self.opts.metrics_listen:
                from ciliumctl.flows.metrics import MetricsServer

                try:
                    from ciliumctl.node.agent_budget import metric_lines

                    self.metrics = MetricsServer(self.opts.metrics_listen, self.store,
                                                 extra=lambda: metric_lines(self.budget.current),
                                                 services=lambda: self.meta.refresh().services.by_id)
                except OSError as err:
                    raise EnvironmentProblem(f"--metrics-listen {self.opts.metrics_listen}: {err.strerror}; "
                                             "pick a free address or '' to turn metrics off") from None
                self.metrics.start()
            if self.opts.serve_cni:
                self._start_cni()
            self._start_cluster()
            self._start_dns()
            self._start_http()
            self._reader_thread = threading.Thread(target=self._read_loop, name="events", daemon=True)
            self._reader_thread.start()
        except BaseException:
            self.shutdown()
            raise
        # everything allocated so far lives as long as the agent: keep it out of the cyclic collector's full
        # passes, whose pauses would otherwise stall the event reader
        gc.freeze()
        self.ready.set()
        log.info("agent %s serving %s (flow buffer %d)", self.node_name, self.socket_path,
                 self.opts.flow_buffer_size)

    def _heal_node(self) -> None:
        """Node mode: the kernel follows the stored state before anything is served, whatever a killed command
        left (node.verify). In cluster mode the first sync reprograms the node from the cluster."""
        if self.opts.kubeconfig or os.environ.get("KUBECONFIG") or os.environ.get("CILIUMCTL_CLUSTER") == "in-cluster":
            return
        from ciliumctl.node import verify

        try:
            for line in verify.heal():
                log.warning("datapath state: %s", line)
        except Exception as err:  # noqa: BLE001 - serving flows must not depend on it; status --verify tells
            log.warning("could not compare the datapath with the stored state: %s", err)

    def _start_cni(self) -> None:
        """Mount the CNI plugin's endpoint when that module is present (ciliumctl/endpoints/cni_server.py)."""
        try:
            from ciliumctl.node.cni.server import CniServer
        except ImportError:
            return
        self.cni = CniServer(self.opts.cni_socket or paths.agent_socket()).start()

    def _start_cluster(self) -> None:
        """In cluster mode, watch policies, pods, namespaces and nodes and publish endpoints and identities
        (ciliumctl.cluster.node_sync); in node mode nothing happens here."""
        if not (self.opts.kubeconfig or os.environ.get("KUBECONFIG")
                or os.environ.get("CILIUMCTL_CLUSTER") == "in-cluster"):
            return
        from ciliumctl.node import cluster_sync as node_sync

        self.cluster = node_sync.start_for_agent(self.opts.kubeconfig, self.opts.context, self.node_name)
        if self.cluster is not None and node_sync.cluster_mode(self.opts.kubeconfig) == "in-cluster":
            # the DaemonSet's agent: no install runs on its node, so it puts NodePort on the node's devices
            from ciliumctl.node.services import devices

            self.devices = devices.start()

    def _start_dns(self) -> None:
        from ciliumctl.node.dns_proxy.service import DNSOptions, DNSService

        opts = self.opts.dns or DNSOptions()
        try:
            self.dns = DNSService(opts, on_flow=self._dns_flow).start()
        except OSError as err:
            # the agent serves the rest; DNS redirected to this port is dropped meanwhile (fail closed)
            log.error("DNS proxy not started: port %d: %s; DNS of endpoints with DNS rules is dropped until an "
                      "agent binds it (--tofqdns-proxy-port)", opts.proxy_port, err.strerror)

    def _start_http(self) -> None:
        from ciliumctl.node.http_proxy.service import HTTPService

        self.http = HTTPService(on_flow=self._http_flow).start()

    # The proxies' events go into the ring as they are, with the node's metadata of now; their L7 flows are built
    # when a client first reads them (flows.store KIND_L7), as the datapath's records are: the proxy's log reader
    # stays cheap per request, and nobody pays for flows no client reads.

    def _http_flow(self, event) -> None:
        """A request and its response through the HTTP proxy: one or two L7 flows in the ring (flows.http)."""
        self.store.add_l7(event, event.flow_count, self.meta.refresh(), self._http_flows)

    def _http_flows(self, event, snap) -> list:
        from ciliumctl.flows.http import http_flows

        return http_flows(event, snap, self.node_name)

    def _dns_flow(self, event) -> None:
        """A DNS request or response of the proxy: an L7 flow in the ring (flows.dns)."""
        self.store.add_l7(event, event.flow_count, self.meta.refresh(), self._dns_flows)

    def _dns_flows(self, event, snap) -> list:
        from ciliumctl.flows.dns import dns_flows

        return dns_flows(event, snap, self.node_name)

    def run(self) -> None:
        """Foreground: start, then serve until SIGTERM/SIGINT."""
        def _stop(signum, frame):
            self.stop_event.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _stop)
        self.start()
        try:
            while not self.stop_event.wait(1.0):
                pass
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        self.stop_event.set()
        if self._reader_thread is not None:
            self._reader_thread.join(timeout=3)
        if self.http is not None:
            self.http.stop()
        if self.dns is not None:
            with contextlib.suppress(Exception):
                self.dns.stop()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.stop()
            if self.devices is not None:
                from ciliumctl.node.services import devices

                try:
                    devices.stop(self.cluster.kube, os.environ.get("CILIUMCTL_NAMESPACE"))
                except Exception as err:  # noqa: BLE001 - stopping must go on; the programs stay pinned
                    log.warning("could not take NodePort off the devices: %s", err)
        if self.cni is not None:
            with contextlib.suppress(Exception):
                self.cni.close()
        if self.metrics is not None:
            with contextlib.suppress(Exception):
                self.metrics.stop()
        if self.server is not None:
            with contextlib.suppress(Exception):
                self.server.stop()
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                if _read_pid() == os.getpid():
                    pid_file().unlink()
            os.close(self._lock_fd)
            self._lock_fd = None

    # ---- events

    def _open_datapath(self):
        """The pinned ring buffer and lost counter, or (None, None) while the datapath is not installed."""
        from ciliumctl.datapath.ringbuf import LostCounter, RingReader

        events, lost = paths.bpffs_dir() / "events", paths.bpffs_dir() / "events_lost"
        if not events.exists():
            return None, None
        reader = RingReader(events)
        counter = LostCounter(lost) if lost.exists() else None
        return reader, counter

    def _read_loop(self) -> None:
        reader = counter = None
        lost_seen = 0
        pin_ino = None
        next_lost_poll = next_pin_check = 0.0
        waiting_logged = False
        try:
            while not self.stop_event.is_set():
                if reader is None:
                    try:
                        reader, counter = self._open_datapath()
                    except EnvironmentProblem as err:
                        log.warning("%s", err)
                        reader = None
                    if reader is None:
                        if not waiting_logged:
                            log.info("waiting for the datapath (%s)", paths.bpffs_dir() / "events")
                            waiting_logged = True
                        self.stop_event.wait(1.0)
                        continue
                    self.datapath_attached = True
                    pin_ino = self.events_pin_inode = _pin_inode(paths.bpffs_dir() / "events")
                    if counter is not None:
                        # events lost while no agent read the ring (since the last agent reported): once, at start
                        total = counter.read()
                        lost_seen = min(_reported_lost(pin_ino), total)
                        self.store.add_lost(1, total - lost_seen)
                        lost_seen = total
                        _save_reported_lost(pin_ino, lost_seen)
                reader.wait(0.2)
                self._drain(reader)
                self.budget.tick()
                now = time.monotonic()
                if counter is not None and now >= next_lost_poll:
                    next_lost_poll = now + LOST_POLL_SECONDS
                    total = counter.read()
                    if total > lost_seen:
                        self.store.add_lost(1, total - lost_seen)
                        lost_seen = total
                        _save_reported_lost(pin_ino, lost_seen)
                if now >= next_pin_check:
                    next_pin_check = now + LOST_POLL_SECONDS
                    pin_now = _pin_inode(paths.bpffs_dir() / "events")
                else:
                    pin_now = pin_ino
                if pin_now != pin_ino:
                    # uninstalled (or reinstalled) underneath us: let go of the map, open the new one
                    reader.close()
                    reader = None
                    if counter is not None:
                        counter.close()
                        counter = None
                    self.datapath_attached = False
                    waiting_logged = False
        except Exception:
            log.exception("event reader stopped")
            raise
        finally:
            if reader is not None:
                reader.close()
            if counter is not None:
                counter.close()

    def _drain(self, reader) -> None:
        while True:
            blob, n = reader.read()
            if not n:
                return
            self.store.add_records(blob, n, self.meta.refresh())


def _pin_inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _reported_lost_file() -> Path:
    return paths.run_dir() / "events_lost.reported"


def _reported_lost(pin_ino: int | None) -> int:
    """Lost events of this pinned datapath (by the pin's inode) that an agent already reported."""
    try:
        ino, count = _reported_lost_file().read_text().split()
        return int(count) if int(ino) == pin_ino else 0
    except (OSError, ValueError):
        return 0


def _save_reported_lost(pin_ino: int | None, n: int) -> None:
    with contextlib.suppress(OSError):
        tmp = _reported_lost_file().with_suffix(".tmp")
        tmp.write_text(f"{pin_ino or 0} {n}\n")
        os.replace(tmp, _reported_lost_file())


# ---------------------------------------------------------------- background supervision

def _read_pid() -> int | None:
    try:
        return int(pid_file().read_text().strip())
    except (OSError, ValueError):
        return None


def _is_agent(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"agent" in cmdline and b"run" in cmdline


def running_pid() -> int | None:
    pid = _read_pid()
    return pid if pid and _is_agent(pid) else None


def _socket_accepts(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(0.5)
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _check_socket_permission(sock: Path) -> None:
    """A socket we may not connect to is a permission problem (exit 2), not an agent that is down."""
    import errno

    from ciliumctl.base.statefile import needs_root

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(0.5)
        s.connect(str(sock))
    except OSError as err:
        if err.errno in (errno.EACCES, errno.EPERM):
            raise EnvironmentProblem(f"{sock}: {err.strerror}; {needs_root(sock)}") from None
    finally:
        s.close()


def _start_lock() -> Path:
    return paths.run_dir() / "agent-start.lock"


def start_background(args: list[str] | None = None, timeout: float = 15.0) -> int:
    """Start `ciliumctl agent run ARGS` as a background process (log in paths.run_dir()/agent.log); returns its pid
    once the Hubble socket accepts connections. Idempotent: an agent already running is left as it is, also when
    several starts race (they take turns; the later ones find the first one's agent)."""
    from ciliumctl.base import statefile

    pid = running_pid()
    if pid:
        return pid
    run_dir = paths.run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    with statefile.locked(_start_lock()):
        pid = running_pid()
        return pid or _spawn(args, timeout)


def _spawn(args: list[str] | None, timeout: float) -> int:
    sock = paths.hubble_socket()
    args = list(args or [])
    if "--hubble-socket" in args:
        sock = Path(args[args.index("--hubble-socket") + 1])
    with open(log_file(), "ab") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "ciliumctl.cli.main", "agent", "run", *args],
                                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            other = running_pid()       # lost the agent lock to an agent started another way: it runs, fine
            if other and _socket_accepts(sock):
                return other
            raise EnvironmentProblem(f"the agent exited at start (code {proc.returncode}): "
                                     f"{_log_tail()}; full log in {log_file()}")
        if _socket_accepts(sock) and _read_pid() == proc.pid:
            return proc.pid
        time.sleep(0.05)
    proc.terminate()
    raise EnvironmentProblem(f"the agent did not come up within {timeout:.0f}s; see {log_file()}")


def _log_tail(lines: int = 3) -> str:
    try:
        text = log_file().read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return " | ".join(text[-lines:]) or "no output"


def stop_background(timeout: float = 10.0, kill_wait: float = 5.0) -> int | None:
    """Stop the background agent: SIGTERM, SIGKILL after `timeout`, and wait up to `kill_wait` more for it to be
    gone. Returns the pid stopped, or None; an agent still alive after that is an EnvironmentProblem, never
    "stopped"."""
    pid = running_pid()
    if not pid:
        with contextlib.suppress(FileNotFoundError):
            pid_file().unlink()
        return None
    try:
        os.kill(pid, signal.SIGTERM)
    except PermissionError:
        raise EnvironmentProblem(f"stopping the agent (pid {pid}) needs root; run it with sudo") from None
    if not _gone_within(pid, timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not _gone_within(pid, kill_wait):
            raise EnvironmentProblem(f"the agent (pid {pid}) still runs {timeout + kill_wait:g}s after SIGTERM and "
                                     f"SIGKILL (stuck in the kernel?); check `ps -o pid,stat,wchan {pid}` and run "
                                     "this again once it is gone")
    with contextlib.suppress(FileNotFoundError):
        if _read_pid() == pid:
            pid_file().unlink()
    return pid


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _alive(pid: int) -> bool:
    """The process still runs: its /proc entry exists and it is not a zombie. Its command line is no test: the
    kernel empties it early in exit, while the process may still hold its sockets and links."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] not in (["Z"], ["X"])


def status(socket_path: Path | None = None) -> dict:
    """Whether the agent runs, and what its Observer API says about itself."""
    pid = running_pid()
    sock = socket_path or paths.hubble_socket()
    _check_socket_permission(sock)
    out = {"running": bool(pid), "pid": pid, "socket": str(sock), "log": str(log_file())}
    if pid or _socket_accepts(sock):
        import grpc

        from ciliumctl.flows.pb.observer import observer_pb2, observer_pb2_grpc

        try:
            with grpc.insecure_channel(f"unix://{sock}") as ch:
                st = observer_pb2_grpc.ObserverStub(ch).ServerStatus(observer_pb2.ServerStatusRequest(), timeout=3)
            out.update({"running": True, "version": st.version, "uptime_ns": st.uptime_ns,
                        "num_flows": st.num_flows, "max_flows": st.max_flows, "seen_flows": st.seen_flows})
        except grpc.RpcError as err:
            out["error"] = err.details() if hasattr(err, "details") else str(err)
    return out


def install_step():
    """The agent as a step of `ciliumctl install` (node mode): start it in the background if it is not running;
    uninstall stops it. Wire with `install.register_step(agent.install_step())`. Agent flags can be passed
    as steps.Options.extra["agent_args"] (a list of `agent run` arguments)."""
    from ciliumctl.node.steps import Step

    def check(_opts) -> str | None:
        return None if running_pid() else f"start the agent in the background (log {log_file()})"

    def run(opts) -> str:
        pid = start_background(list((opts.extra or {}).get("agent_args") or []))
        return f"agent running, pid {pid}"

    def undo() -> str | None:
        pid = stop_background()
        return f"agent stopped (pid {pid})" if pid else None

    return Step("agent", check, run, undo)
