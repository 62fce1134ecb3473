"""A sandbox node driven through the real `ciliumctl` executable: a network namespace `cctl<rand4>` plays the
node (the endpoints' namespaces are `<name>-*`), with its own state and run directories and its own pin directory
/sys/fs/bpf/<name>, all handed to the CLI through CILIUMCTL_* variables. Used as a context manager; leaving it
stops what it started, uninstalls and removes whatever is left, also on failure."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from . import netns
from .cli import CLI, cli_env, run_cli
from .shell import sh, stop


class SandboxNode:
    def __init__(self, root: Path, **settings: str):
        """root: a directory of this node's own (state/, run/, agent.log); settings: more CILIUMCTL_* variables."""
        self.name = netns.unique_prefix()
        self.state = root / "state"
        self.bpffs = Path(f"/sys/fs/bpf/{self.name}")
        self.env = cli_env(CILIUMCTL_NODE_NETNS=self.name, CILIUMCTL_STATE_DIR=str(self.state),
                           CILIUMCTL_RUN_DIR=str(root / "run"), CILIUMCTL_BPFFS_DIR=str(self.bpffs), **settings)
        self.log = root / "agent.log"
        self.agent: subprocess.Popen | None = None
        self.servers: list[subprocess.Popen] = []

    # --- lifecycle ---------------------------------------------------------------------------------------
    def __enter__(self) -> SandboxNode:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        sh("ip", "netns", "add", self.name)
        return self

    def __exit__(self, *exc) -> None:
        self.destroy()

    def destroy(self) -> None:
        stop(self.agent)
        for p in self.servers:
            p.kill()
        subprocess.run([CLI, "uninstall"], env=self.env, capture_output=True, timeout=60)
        for p in self.servers:
            p.wait(timeout=5)
        netns.delete(*netns.named(f"{self.name}-"), self.name)
        shutil.rmtree(self.bpffs, ignore_errors=True)

    # --- the CLI and the node ----------------------------------------------------------------------------
    def cli(self, *args: str, check: bool = True, timeout: float = 60, input: str | None = None):
        return run_cli(*args, env=self.env, check=check, timeout=timeout, input=input)

    def ns(self, *cmd: str) -> subprocess.CompletedProcess:
        """A command in the node namespace itself."""
        return sh("ip", "netns", "exec", self.name, *cmd, check=False)

    def add_pod(self, name: str, app: str) -> str:
        """An endpoint labelled app=<app>; its IPv4 address."""
        import json

        out = self.cli("endpoint", "add", name, "-l", f"app={app}", "-o", "json").stdout
        return json.loads(out)["ipv4"].split("/")[0]

    def ring(self):
        """A reader of the node's event ring buffer (a context manager)."""
        from ciliumctl.datapath.ringbuf import RingReader

        return RingReader(self.bpffs / "events")

    def leftovers(self) -> dict:
        """Everything of this node still on the machine."""
        links = self.ns("ip", "-o", "link", "show").stdout
        veths = sorted(l.split(":")[1].strip().split("@")[0] for l in links.splitlines() if "cctlep" in l)
        return {"netns": netns.named(f"{self.name}-"), "veths": veths, "pins": self.bpffs.exists(),
                "state": self.state.exists()}

    # --- traffic between endpoints -----------------------------------------------------------------------
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

    # --- the agent ---------------------------------------------------------------------------------------
    def start_agent(self, kubeconfig: str) -> None:
        self.agent = subprocess.Popen(
            [CLI, "agent", "run", "--kubeconfig", kubeconfig, "--node-name", self.name, "--metrics-listen", ""],
            env=self.env, stdout=self.log.open("w"), stderr=subprocess.STDOUT)

    def agent_log(self) -> str:
        return self.log.read_text() if self.log.exists() else ""
