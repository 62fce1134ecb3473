"""A sandbox node for end-to-end CLI tests: the real `ciliumctl` executable, run as a subprocess with
CILIUMCTL_NODE_NETNS / STATE_DIR / RUN_DIR / BPFFS_DIR pointing at a per-test network namespace (cctl<rand4>),
temporary directories and a per-test pin directory. Teardown uninstalls and then removes whatever is left, also
on failure."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "ciliumctl")


def sh(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(list(args), capture_output=True, text=True, **kw)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(args)} -> {res.returncode}: {res.stderr.strip()}")
    return res


@dataclass
class Node:
    name: str
    env: dict
    state: Path
    bpffs: Path
    servers: list = field(default_factory=list)

    def cli(self, *args: str, check: bool = True, timeout: float = 60, input: str | None = None):
        res = subprocess.run([CLI, *args], capture_output=True, text=True, env=self.env, timeout=timeout,
                             input=input)
        if check and res.returncode != 0:
            raise AssertionError(f"ciliumctl {' '.join(args)} -> {res.returncode}\n{res.stdout}\n{res.stderr}")
        assert "Traceback" not in res.stderr, res.stderr
        return res

    def ns(self, *cmd: str) -> subprocess.CompletedProcess:
        """A command in the node namespace itself."""
        return sh("ip", "netns", "exec", self.name, *cmd, check=False)

    def serve(self, endpoint: str, ip: str, port: int, udp: bool = False) -> subprocess.Popen:
        """A TCP (HTTP) or UDP echo server inside an endpoint, started through `endpoint exec`."""
        code = (f"import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('{ip}',{port}))\n"
                "while True:\n d,a=s.recvfrom(2048); s.sendto(d,a)") if udp else None
        from ciliumctl.node.demo import SERVER

        argv = [sys.executable, "-c", code] if udp else [sys.executable, "-c", SERVER, ip, str(port), str(self.state)]
        p = subprocess.Popen([CLI, "endpoint", "exec", endpoint, "--", *argv], env=self.env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.servers.append(p)
        if not udp:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                if self.connect(endpoint, ip, port, timeout=0.3):
                    break
                time.sleep(0.05)
        else:
            time.sleep(0.3)
        return p

    def connect(self, endpoint: str, ip: str, port: int, timeout: float = 1.0) -> bool:
        """A TCP connection from inside `endpoint`: True when it was established."""
        code = (f"import socket, sys\ntry: socket.create_connection(('{ip}', {port}), timeout={timeout}).close()\n"
                "except OSError: sys.exit(1)")
        return self.cli("endpoint", "exec", endpoint, "--", sys.executable, "-c", code,
                        check=False).returncode == 0

    def udp(self, endpoint: str, ip: str, port: int, timeout: float = 1.0) -> bool:
        code = (f"import socket, sys\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout({timeout})\n"
                f"try: s.sendto(b'x', ('{ip}', {port})); s.recvfrom(16)\nexcept OSError: sys.exit(1)")
        return self.cli("endpoint", "exec", endpoint, "--", sys.executable, "-c", code,
                        check=False).returncode == 0

    def ping(self, endpoint: str, ip: str) -> bool:
        return self.cli("endpoint", "exec", endpoint, "--", "ping", "-c1", "-W1", ip, check=False).returncode == 0

    def leftovers(self) -> dict:
        """Everything of this node still on the machine."""
        netns = sorted(p.name for p in Path("/run/netns").glob(f"{self.name}-*"))
        links = self.ns("ip", "-o", "link", "show").stdout
        veths = sorted(l.split(":")[1].strip().split("@")[0] for l in links.splitlines() if "cctlep" in l)
        return {"netns": netns, "veths": veths, "pins": self.bpffs.exists(), "state": self.state.exists()}


def _root_ready() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if not Path(CLI).exists():
        return f"{CLI} missing (run make setup)"
    return None


@pytest.fixture
def node(tmp_path):
    why = _root_ready()
    if why:
        pytest.skip(why)
    name = f"cctl{secrets.token_hex(2)}"
    sh("ip", "netns", "add", name)
    env = dict(os.environ)
    for k in ("KUBECONFIG", "CILIUMCTL_POOL", "NO_COLOR"):
        env.pop(k, None)
    env.update(CILIUMCTL_NODE_NETNS=name, CILIUMCTL_STATE_DIR=str(tmp_path / "state"),
               CILIUMCTL_RUN_DIR=str(tmp_path / "run"), CILIUMCTL_BPFFS_DIR=f"/sys/fs/bpf/{name}",
               NO_COLOR="1")
    n = Node(name, env, tmp_path / "state", Path(f"/sys/fs/bpf/{name}"))
    try:
        yield n
    finally:
        for p in n.servers:
            p.kill()
        subprocess.run([CLI, "uninstall"], env=env, capture_output=True, timeout=60)
        for p in n.servers:
            p.wait(timeout=5)
        for ns in Path("/run/netns").glob(f"{name}-*"):
            sh("ip", "netns", "pids", ns.name, check=False)
            sh("ip", "netns", "delete", ns.name, check=False)
        sh("ip", "netns", "delete", name, check=False)
        shutil.rmtree(n.bpffs, ignore_errors=True)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
