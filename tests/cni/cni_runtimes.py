"""Real container runtimes for the CNI end-to-end tests, kept off the machine: each runs in a private mount
namespace (a holder process made with `unshare --mount --propagation private`) in which temporary directories are
bind-mounted over the runtime's state and configuration paths, so nothing they write, mount or leave behind
reaches the host, also for processes that drop our environment (podman's cleanup process reads the default
config paths, which are our bind mounts). Images come from busybox-static (no registry is reachable)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import tarfile
import time
from pathlib import Path

from support.containerd import containerd_config
from support.shell import stop

BUSYBOX = "/usr/bin/busybox"
APPLETS = ["sh", "sleep", "nc", "ping", "ip", "cat", "wget", "httpd", "echo", "ls", "hostname", "true"]
IMAGE = "localhost/cctl-busybox:1"
PAUSE = "localhost/cctl-pause:1"


def build_image(path: Path, ref: str, cmd: list[str]) -> Path:
    """A docker-archive tar (`docker save` layout) with one layer: busybox-static and applet links."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        for d in ("bin", "tmp", "etc", "proc", "sys", "dev", "www"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        data = Path(BUSYBOX).read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        for name in APPLETS:
            info = tarfile.TarInfo(f"bin/{name}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        page = b"hello from a pod\n"
        info = tarfile.TarInfo("www/index.html")
        info.size, info.mode = len(page), 0o644
        tar.addfile(info, io.BytesIO(page))
    layer_bytes = layer.getvalue()
    diff_id = hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": cmd, "Env": ["PATH=/bin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        "history": [{"created_by": "ciliumctl tests: busybox-static"}],
    }).encode()
    config_id = hashlib.sha256(config).hexdigest()
    manifest = json.dumps([{"Config": f"{config_id}.json", "RepoTags": [ref],
                            "Layers": [f"{diff_id}/layer.tar"]}]).encode()
    with tarfile.open(path, "w") as tar:
        for name, blob in ((f"{diff_id}/layer.tar", layer_bytes), (f"{config_id}.json", config),
                           ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(blob), 0o644
            tar.addfile(info, io.BytesIO(blob))
    return path


class MountNamespace:
    """A holder process in a private mount namespace; run commands in it with `run()` / `popen()`. With `netns`
    (a path) the commands also run in that network namespace: runtimes run beside the sandbox node, never in
    the machine's own network namespace (plugins such as bridge change the namespace they run in)."""

    def __init__(self, binds: dict[str, Path], netns: str | None = None):
        self.binds = binds
        self.netns = netns
        self.created: list[Path] = []
        self.holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sleep", "100000"],
                                       stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 5
            # wait until the holder has unshared (its mount namespace differs from ours)
            while os.readlink(f"/proc/{self.holder.pid}/ns/mnt") == os.readlink("/proc/self/ns/mnt"):
                if time.monotonic() > deadline:
                    raise RuntimeError("unshare did not create a mount namespace")
                time.sleep(0.01)
            for target, source in binds.items():
                source.mkdir(parents=True, exist_ok=True)
                missing = []          # mount points we create on the shared filesystem go again in close()
                t = Path(target)
                while not t.exists():
                    missing.append(t)
                    t = t.parent
                self.created += missing
                self.run(["mkdir", "-p", target])
                self.run(["mount", "--bind", str(source), target])
        except BaseException:
            self.close()
            raise

    def argv(self, cmd: list[str]) -> list[str]:
        # nsenter opens every namespace file before entering any: the --net path is resolved in our mount ns
        net = [f"--net={self.netns}"] if self.netns else []
        return ["nsenter", "-t", str(self.holder.pid), "-m", *net, "--", *cmd]

    def run(self, cmd: list[str], check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
        proc = subprocess.run(self.argv(cmd), capture_output=True, text=True, timeout=timeout, **kw)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: exit {proc.returncode}: {proc.stderr.strip()[-1500:]}")
        return proc

    def popen(self, cmd: list[str], **kw) -> subprocess.Popen:
        return subprocess.Popen(self.argv(cmd), **kw)

    def close(self) -> None:
        if self.holder.poll() is None:
            self.holder.kill()
            self.holder.wait(5)
        for d in self.created:       # deepest first, as recorded; only when empty
            try:
                d.rmdir()
            except OSError:
                pass


def remove_cgroups(parent: str) -> None:
    """Remove a cgroup parent (and its empty children) from every hierarchy: runtimes create it and leave it."""
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        top = hierarchy / parent.strip("/")
        if not top.is_dir() or hierarchy == top:
            continue
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [top]:
            try:
                d.rmdir()
            except OSError:
                pass


def _kill_by_pidfiles(pidfiles) -> None:
    for pidfile in pidfiles:
        try:
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
        except (OSError, ValueError):
            pass


# --------------------------------------------------------------------------------------------- containerd

class Containerd:
    """containerd with its CRI plugin in a private mount namespace, driven over CRI gRPC like kubelet."""

    def __init__(self, tmp: Path, cni_bin: Path, cni_conf: Path, netns: str, cgroup_parent: str):
        self.tmp = tmp
        self.cgroup_parent = cgroup_parent    # pods go below it (PodSandboxConfig.linux.cgroup_parent)
        self.sock = tmp / "containerd.sock"
        self.log = tmp / "containerd.log"
        self.proc = None
        self.channel = None
        self.mnt = MountNamespace({"/run/netns": tmp / "netns", "/var/lib/cni": tmp / "var-lib-cni",
                                   "/run/containerd": tmp / "run-containerd"}, netns)
        try:
            cfg = tmp / "containerd.toml"
            cfg.write_text(containerd_config(tmp, PAUSE, self.sock, cni_bin, cni_conf))
            with open(self.log, "ab") as log:
                self.proc = self.mnt.popen(["containerd", "--config", str(cfg)], stdout=log, stderr=log,
                                           stdin=subprocess.DEVNULL)
            deadline = time.monotonic() + 30
            while not self.sock.exists():
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("containerd did not start: " + self.log.read_text()[-3000:])
                time.sleep(0.05)
            for ref, cmd in ((IMAGE, ["/bin/sleep", "1000000"]), (PAUSE, ["/bin/sleep", "1000000"])):
                tar = build_image(tmp / (ref.split("/")[-1].replace(":", "_") + ".tar"), ref, cmd)
                self.ctr("images", "import", str(tar))
            import cri_api_pb2_grpc
            import grpc

            self.channel = grpc.insecure_channel(f"unix://{self.sock}")
            self.runtime = cri_api_pb2_grpc.RuntimeServiceStub(self.channel)
        except BaseException:
            self.close()
            raise

    def ctr(self, *args: str) -> str:
        return self.mnt.run(["ctr", "--address", str(self.sock), "-n", "k8s.io", *args], timeout=60).stdout

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
        stop(self.proc, 15)
        # shims outlive containerd by design; they run in our mount namespace: end them by pid
        _kill_by_pidfiles(self.tmp.glob("state/io.containerd.runtime.v2.task/*/*/shim.pid"))
        self.mnt.close()
        remove_cgroups(self.cgroup_parent)


@contextlib.contextmanager
def containerd_cri(node):
    """containerd on a CniNode (its CNI config and plugins, its node netns), seen through a CRI client as
    kubelet sees it; stopped afterwards, also on failure."""
    from cri_client import CriClient

    rt = Containerd(node.tmp / "containerd", node.bin_dir, node.conf_dir, f"/run/netns/{node.node_ns}",
                    f"/{node.prefix}")
    try:
        yield CriClient(rt.runtime, f"/{node.prefix}")
    finally:
        rt.close()


# --------------------------------------------------------------------------------------------- podman

CONTAINERS_CONF = """[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
netns = "bridge"
[engine]
runtime = "runc"
conmon_cgroup = "{cgroup_parent}/conmon"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "{tmp}/podman-tmp"
[network]
network_backend = "cni"
cni_plugin_dirs = ["{cni_bin}"]
network_config_dir = "/etc/cni/net.d"
default_network = "ciliumctl"
"""

STORAGE_CONF = """[storage]
driver = "vfs"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
"""


class Podman:
    """podman 4 with its CNI backend, every path it uses bind-mounted from a temporary directory."""

    def __init__(self, tmp: Path, cni_bin: Path, cni_conf: Path, netns: str, cgroup_parent: str):
        self.tmp = tmp
        self.cgroup_parent = cgroup_parent    # every container and conmon below it (containers.conf)
        etc = tmp / "etc-containers"
        etc.mkdir(parents=True)
        (etc / "containers.conf").write_text(CONTAINERS_CONF.format(tmp=tmp, cni_bin=cni_bin,
                                                                     cgroup_parent=cgroup_parent))
        (etc / "storage.conf").write_text(STORAGE_CONF)
        (etc / "registries.conf").write_text("unqualified-search-registries = []\n")
        (etc / "policy.json").write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        self.mnt = MountNamespace({
            "/etc/containers": etc, "/etc/cni/net.d": cni_conf, "/var/lib/containers": tmp / "var-lib-containers",
            "/run/containers": tmp / "run-containers", "/run/libpod": tmp / "run-libpod",
            "/var/lib/cni": tmp / "var-lib-cni", "/run/netns": tmp / "netns",
        }, netns)
        try:
            tar = build_image(tmp / "busybox.tar", IMAGE, ["/bin/sleep", "1000000"])
            self.podman("load", "-i", str(tar))
        except BaseException:
            self.close()
            raise

    def podman(self, *args: str, check: bool = True, timeout: float = 90) -> subprocess.CompletedProcess:
        return self.mnt.run(["podman", *args], check=check, timeout=timeout)

    def close(self) -> None:
        try:
            names = self.podman("ps", "-aq", check=False, timeout=30).stdout.split()
            if names:
                self.podman("rm", "-f", "-t", "0", *names, check=False, timeout=60)
        except Exception:
            pass
        # conmon processes of containers that could not be removed: kill by pid file
        _kill_by_pidfiles([*self.tmp.glob("run-containers/storage/*/*/userdata/conmon.pid"),
                           *self.tmp.glob("var-lib-containers/storage/*/*/userdata/conmon.pid")])
        self.mnt.close()
        remove_cgroups(self.cgroup_parent)
