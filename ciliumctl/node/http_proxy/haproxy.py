"""The node's HTTP proxy: Debian's HAProxy, run and supervised by the agent in the node's network namespace.

apply(state) writes the configuration of the revision (node/http_proxy/config.py), checks it with `haproxy -c`
before anything changes (a bad one: one line, the running proxy keeps the old), starts HAProxy or reloads it
when the text changed (master-worker, SIGUSR2: the new worker takes over the listening socket, the old one
finishes its connections), and brings the identity map in line through the runtime API (`add map` / `set map` /
`del map` on the admin socket), without a reload. A thread restarts HAProxy when it dies; meanwhile the
datapath refuses the redirected connections (fail closed: no listening socket, bpf/lib/proxy.h).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from ciliumctl.base import netns
from ciliumctl.base.errors import EnvironmentProblem
from ciliumctl.node.http_proxy import config as cfg
from ciliumctl.policy.resolved import ResolvedState

log = logging.getLogger("ciliumctl.node.http_proxy.haproxy")
BINARY = "haproxy"
DEFAULT_PORT = 15080     # HAProxy's listener for redirected HTTP (Cilium picks its proxy ports from 10000 up)


def _enter_node() -> None:
    path = netns.node_netns()
    if path is not None:
        netns.enter(path, "node network namespace", "create it or unset CILIUMCTL_NODE_NETNS")


def binary() -> str:
    found = shutil.which(BINARY)
    if not found:
        raise EnvironmentProblem("HTTP proxy: the haproxy binary is missing; install Debian's package "
                                 "(apt-get install haproxy, scripts/setup.sh does) or remove the rules.http policies")
    return found


class HAProxy:
    def __init__(self, run_dir: Path, port: int = DEFAULT_PORT):
        self.paths = cfg.Paths(str(run_dir))
        self.port = port
        self.proc: subprocess.Popen | None = None
        self.config = ""
        self.map: dict[str, str] = {}
        self.acls: dict[str, set[str]] = {}
        self.restarts = 0
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._watch: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------------ apply
    def apply(self, state: ResolvedState) -> None:
        """Configuration and identity map of a revision: start, reload or only update the map."""
        text = cfg.render(state, self.port, self.paths)          # Unexpressible: nothing changed yet
        self.apply_rendered(text, cfg.map_entries(state.ipcache), cfg.acl_entries(state))

    def apply_rendered(self, text: str, entries: dict[str, str], acls: dict[str, set[str]]) -> None:
        """Only a change of the rules reloads; identities (the map, the ACL files) change through the runtime API."""
        with self._lock:
            Path(self.paths.run_dir).mkdir(parents=True, exist_ok=True)
            if text != self.config or not self._running():
                self._check(text, acls)
                self._write(self.paths.ipcache_map, cfg.map_text(entries))
                for name, lines in acls.items():
                    self._write(self.paths.acl(name), "".join(f"{x}\n" for x in sorted(lines)))
                self._write(self.paths.config, text)
                if self._running():
                    self._reload()
                else:
                    self._start()
                self.config, self.map, self.acls = text, entries, acls
            else:
                if entries != self.map:
                    self._update_map(entries)
                    self._write(self.paths.ipcache_map, cfg.map_text(entries))
                    self.map = entries
                if acls != self.acls:
                    self._update_acls(acls)
                    self.acls = acls
        if self._watch is None:
            self._watch = threading.Thread(target=self._supervise, name="haproxy-supervisor", daemon=True)
            self._watch.start()

    def _write(self, path: str, text: str) -> None:
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)

    def _check(self, text: str, acls: dict[str, set[str]]) -> None:
        tmp = f"{self.paths.config}.check"
        self._write(tmp, text)
        # the files it names must exist; the running proxy reads them only at its next start or reload
        for path in [self.paths.ipcache_map] + [self.paths.acl(name) for name in acls]:
            if not os.path.exists(path):
                self._write(path, "")
        try:
            proc = subprocess.run([binary(), "-c", "-q", "-f", tmp], capture_output=True, text=True)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if proc.returncode != 0:
            why = next((ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if "ALERT" in ln),
                       (proc.stderr or proc.stdout).strip())
            raise cfg.Unexpressible(f"HTTP proxy: HAProxy refuses the configuration made from the policy ({why}); "
                                    "nothing applied, the proxy keeps the previous rules")

    # ------------------------------------------------------------------------------------------------ process
    def _running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _stop_stale(self) -> None:
        """A HAProxy of an agent that died without stopping it still holds the port: end it (only if its command
        line names our configuration)."""
        try:
            pid = int(Path(self.paths.pidfile).read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            return
        if self.paths.config.encode() not in cmdline:
            return
        log.warning("stopping the HAProxy (pid %d) an earlier agent left running", pid)
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.02)

    def _start(self) -> None:
        if self.proc is None:
            self._stop_stale()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.paths.admin)
        self.proc = subprocess.Popen([binary(), "-W", "-db", "-f", self.paths.config], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, preexec_fn=_enter_node,
                                     start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                self.proc = None
                if "Address already in use" in err:
                    raise EnvironmentProblem(f"HTTP proxy: port {self.port} is already taken in the node's network "
                                             "namespace; free it or choose another proxy port")
                raise EnvironmentProblem(f"HTTP proxy: haproxy exited at start: {err.strip().splitlines()[-1:]}")
            if self.admin_ready():
                return
            time.sleep(0.02)
        raise EnvironmentProblem("HTTP proxy: haproxy did not open its admin socket within 10 s")

    def admin_ready(self) -> bool:
        try:
            return "Pid:" in self.command("show info")
        except OSError:
            return False

    def _reload(self) -> None:
        assert self.proc is not None
        before = self.worker_pid()
        os.kill(self.proc.pid, signal.SIGUSR2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:      # the new worker answers on the admin socket
            pid = self.worker_pid()
            if pid and pid != before:
                return
            time.sleep(0.02)
        log.warning("haproxy reload: no new worker within 10 s")

    def worker_pid(self) -> int:
        try:
            for line in self.command("show info").splitlines():
                if line.startswith("Pid:"):
                    return int(line.split(":")[1])
        except (OSError, ValueError):
            pass
        return 0

    def _supervise(self) -> None:
        while not self._stop.wait(0.2):
            with self._lock:
                if self.proc is not None and self.proc.poll() is not None and self.config:
                    log.warning("haproxy exited (%s): restarting", self.proc.returncode)
                    self.restarts += 1
                    try:
                        self._start()
                    except EnvironmentProblem as err:
                        log.error("%s", err)

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            if self.proc is not None and self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait()
                _wait_group_gone(self.proc.pid)
            self.proc = None
            self.config = ""
        if self._watch is not None:
            self._watch.join(2)
            self._watch = None

    # ------------------------------------------------------------------------------------------------ runtime API
    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(self.paths.admin)
            s.sendall(line.encode() + b"\n")
            out = []
            while chunk := s.recv(65536):
                out.append(chunk)
        return b"".join(out).decode(errors="replace")

    def _update_acls(self, acls: dict[str, set[str]]) -> None:
        """The running proxy's ACL files (same names: the configuration did not change) to `acls`, no reload."""
        for name, lines in acls.items():
            path, old = self.paths.acl(name), self.acls.get(name, set())
            cmds = [f"del acl {path} {x}" for x in sorted(old - lines)]
            cmds += [f"add acl {path} {x}" for x in sorted(lines - old)]
            for i in range(0, len(cmds), 200):
                out = self.command(";".join(cmds[i:i + 200]))
                if "not found" in out.lower() or "unknown" in out.lower():
                    raise EnvironmentProblem(f"HTTP proxy: updating the identities of {name} failed: "
                                             f"{out.strip()[:200]}")
            self._write(path, "".join(f"{x}\n" for x in sorted(lines)))

    def _update_map(self, entries: dict[str, str]) -> None:
        """The running proxy's identity map to `entries`, entry by entry (no reload)."""
        cmds = [f"del map {self.paths.ipcache_map} {k}" for k in self.map if k not in entries]
        cmds += [f"{'set' if k in self.map else 'add'} map {self.paths.ipcache_map} {k} {v}"
                 for k, v in entries.items() if self.map.get(k) != v]
        for i in range(0, len(cmds), 200):
            out = self.command(";".join(cmds[i:i + 200]))
            if "not found" in out.lower() or "unknown" in out.lower():
                raise EnvironmentProblem(f"HTTP proxy: updating the identity map failed: {out.strip()[:200]}")


def _wait_group_gone(pgid: int, timeout: float = 5.0) -> None:
    """The master's exit is not the end: its workers (same process group) may still hold the listeners for a
    moment, and a connection accepted then is reset. Stopped means nothing of the group is left."""
    deadline = time.monotonic() + timeout
    with contextlib.suppress(ProcessLookupError):
        while time.monotonic() < deadline:     # bounded: a worker left as a zombie still counts as there
            os.killpg(pgid, 0)
            time.sleep(0.01)
        os.killpg(pgid, signal.SIGKILL)
