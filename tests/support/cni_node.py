"""A sandbox node for the CNI plugin: a network namespace `<prefix>node` (prefix `cctl<rand4>`) running the CNI
server or the real agent, the plugin installed into a temporary CNI bin directory beside Debian's plugins, and
helpers that exec the plugin the way a runtime (or cnitool) does. Pod namespaces are `<prefix>p<i>`; everything is
removed on close(), also when starting fails."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ciliumctl.node.cni import install as cni_install

from . import netns
from .cli import CLI, cli_env, run_cli
from .shell import sh, stop

DEBIAN_CNI = "/usr/lib/cni"


def require_stack() -> None:
    """Skip without root, and (not fail) while a part the CNI server builds on has not landed in this tree yet."""
    import importlib

    import pytest

    netns.require_root()
    for module in ("ciliumctl.policy.resolve", "ciliumctl.identity.allocator", "ciliumctl.datapath.loader"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            pytest.skip(f"{module} is not in this build yet ({err})")


class CniNode:
    """A node netns + CNI server + installed plugin. Use as a context manager."""

    def __init__(self, pool: str = "10.231.0.0/24", agent: bool = False):
        self.agent = agent          # True: the real `ciliumctl agent run` serves the socket (and reads events)
        self.prefix = netns.unique_prefix()
        self.tmp = Path(tempfile.mkdtemp(prefix=self.prefix + "."))
        self.node_ns = self.prefix + "node"
        self.pod_ns: list[str] = []
        self.pool = pool
        self.state = self.tmp / "state"
        self.rundir = self.tmp / "run"
        self.conf_dir = self.tmp / "net.d"
        self.bin_dir = self.tmp / "bin"
        self.ipam_dir = self.tmp / "ipam"
        self.bpffs = Path(f"/sys/fs/bpf/{self.prefix}")
        self.socket = self.rundir / "agent.sock" if agent else self.tmp / "agent.sock"
        self.server: subprocess.Popen | None = None
        self.server_log = self.tmp / "server.log"

    # --- lifecycle ---------------------------------------------------------------------------------------
    def __enter__(self) -> CniNode:
        try:
            sh("ip", "netns", "add", self.node_ns)
            sh("ip", "netns", "exec", self.node_ns, "ip", "link", "set", "lo", "up")
            self.bin_dir.mkdir(parents=True)
            for name in os.listdir(DEBIAN_CNI):
                os.symlink(os.path.join(DEBIAN_CNI, name), self.bin_dir / name)
            cni_install.install_cni(str(self.conf_dir), str(self.bin_dir), pool=self.pool,
                                    agent_socket=str(self.socket), ipam_data_dir=str(self.ipam_dir),
                                    host_veth_prefix=self.prefix)
            self.start_server()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def env(self) -> dict:
        return cli_env(CILIUMCTL_STATE_DIR=str(self.state), CILIUMCTL_RUN_DIR=str(self.rundir),
                       CILIUMCTL_NODE_NETNS=self.node_ns, CILIUMCTL_BPFFS_DIR=str(self.bpffs),
                       CILIUMCTL_POOL=self.pool)   # the agent's own IPAM hands out its upper half

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """`ciliumctl ARGS` against this node (the exit code is the caller's to check)."""
        return run_cli(*args, env=self.env(), timeout=120)

    def ring(self):
        """A reader of the node's event ring buffer (a context manager)."""
        from ciliumctl.datapath.ringbuf import RingReader

        return RingReader(self.bpffs / "events")

    def start_server(self) -> None:
        log = open(self.server_log, "ab")
        if self.agent:
            argv = [CLI, "agent", "run", "--metrics-listen", "", "--node-name", self.node_ns]
        else:
            argv = [sys.executable, "-m", "ciliumctl.node.cni.server", "--socket", str(self.socket)]
        self.server = subprocess.Popen(argv, env=self.env(), stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while not self.socket.exists() or (self.agent and not (self.rundir / "hubble.sock").exists()):
            if self.server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("CNI server did not start: " + self.server_log.read_text()[-2000:])
            time.sleep(0.02)

    def stop_server(self) -> None:
        stop(self.server)
        self.server = None
        if self.socket.exists():
            self.socket.unlink()

    def close(self) -> None:
        self.stop_server()
        netns.delete(*self.pod_ns, self.node_ns)
        shutil.rmtree(self.bpffs, ignore_errors=True)    # pins (and nested dirs) on bpffs unlink like files
        shutil.rmtree(self.tmp, ignore_errors=True)

    # --- pods --------------------------------------------------------------------------------------------
    def new_pod_ns(self, i: int) -> str:
        name = f"{self.prefix}p{i}"
        sh("ip", "netns", "add", name)
        self.pod_ns.append(name)
        return name

    def conf(self, **plugin_overrides) -> dict:
        """The network configuration a runtime derives from the installed conflist (first plugin)."""
        cl = json.loads((self.conf_dir / cni_install.CONFLIST_NAME).read_text())
        plugin = dict(cl["plugins"][0])
        plugin.pop("capabilities", None)
        plugin.update(cniVersion=cl["cniVersion"], name=cl["name"])
        plugin.update(plugin_overrides)
        return plugin

    def host_local(self, **overrides) -> dict:
        """An "ipam" section delegating to Debian's host-local over the same range, its leases in ipam_dir."""
        start, end = cni_install.cni_range(self.pool)
        return dict({"type": "host-local", "dataDir": str(self.ipam_dir),
                     "ranges": [[{"subnet": self.pool, "rangeStart": start, "rangeEnd": end}]]}, **overrides)

    def plugin(self, command: str, conf: dict | str | None, container_id: str = "", netns: str = "",
               ifname: str = "eth0", args: str = "IgnoreUnknown=1", extra_env: dict | None = None):
        """Exec the installed plugin like a runtime; returns (exit code, parsed stdout or None, stderr)."""
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": command, "CNI_CONTAINERID": container_id,
               "CNI_NETNS": netns, "CNI_IFNAME": ifname, "CNI_ARGS": args, "CNI_PATH": str(self.bin_dir)}
        env.update(extra_env or {})
        data = conf if isinstance(conf, str) else json.dumps(conf) if conf is not None else ""
        proc = subprocess.run([str(self.bin_dir / cni_install.PLUGIN_NAME)], input=data, env=env,
                              capture_output=True, text=True, timeout=90)
        out = json.loads(proc.stdout) if proc.stdout.strip() else None
        return proc.returncode, out, proc.stderr

    def node_exec(self, *cmd: str) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", self.node_ns, *cmd, check=False)

    def host_links(self) -> list[str]:
        out = self.node_exec("ip", "-o", "link", "show").stdout
        return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()
                if line.split(":")[1].strip().startswith(self.prefix)]

    def host_routes(self) -> list[str]:
        return [r for r in self.node_exec("ip", "-4", "route", "show").stdout.splitlines() if self.prefix in r]

    def leases(self) -> list[str]:
        """Addresses held: host-local's lease files, and the agent's own (its attachment records say "agent")."""
        d = self.ipam_dir / "ciliumctl"
        files = [p.name for p in d.iterdir() if p.name[0].isdigit()] if d.is_dir() else []
        records = [json.loads(p.read_text()) for p in sorted((self.state / "cni").glob("*.json"))]
        return sorted(files + [r["ipv4"] for r in records if r.get("ipam") == "agent"])

    def endpoints(self) -> list[dict]:
        d = self.state / "endpoints"
        return [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))] if d.is_dir() else []
