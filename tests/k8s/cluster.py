"""A real Kubernetes cluster on this machine, for the tests (tests/k8s/conftest.py) and for people (`make cluster`).

Control plane: etcd (Debian's etcd-server), kube-apiserver with TLS from a CA made per run, controller-manager and
scheduler, all on the machine's 127.0.0.1 (free ports), everything under one temporary directory.

Nodes: each a network namespace of its own, joined by veths to a bridge in a "network" namespace that plays the
wire between nodes (addresses of NODE_NET exist only in these namespaces). Each node runs its own containerd
(own root, state and socket) and kubelet, both in a mount namespace of the node (a holder process) where the
host paths a node owns (/etc/cni/net.d, /opt/cni/bin, /var/run/ciliumctl, /var/lib/kubelet, /run/netns, a bpffs
of its own on /sys/fs/bpf, ...) are bind mounts of the node's directories: hostPath volumes of the agent's
DaemonSet land there, never on the machine. Nothing is added to the machine's own network namespace:
- nodes reach the API server through a forwarder that listens in each node on the `kubernetes` Service address
  (10.96.0.1:443, on the node's lo) and connects to 127.0.0.1 on the machine (what kube-proxy gives a real node);
- the API server reaches kubelets (exec, logs) through its egress selector: an HTTP CONNECT proxy on a unix
  socket that dials from inside the network namespace.
Teardown ends every process by cgroup (runtimes, shims and containers), removes the namespaces, cgroups and
directories, also after a failure half-way through start().
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests")]   # ciliumctl, support: also when run as a script (`make cluster`)
from support.containerd import containerd_config  # noqa: E402

from ciliumctl.base import netns as _netns  # noqa: E402

SERVICE_CIDR = "10.96.0.0/24"
API_SERVICE_IP = "10.96.0.1"          # the `kubernetes` Service: the first address of SERVICE_CIDR
CLUSTER_CIDR = "10.210.0.0/16"        # node pod CIDRs (controller-manager hands out a /24 per node)
NODE_NET = ipaddress.ip_network("10.231.0.0/24")   # node addresses, only inside the cluster's namespaces
KUBELET_PORT = 10250
IMAGES = ("ciliumctl:local", "ciliumctl-test:local", "ciliumctl-pause:local")
PAUSE_IMAGE = "docker.io/library/ciliumctl-pause:local"
CGROUP_ROOT = Path("/sys/fs/cgroup")


class ClusterError(RuntimeError):
    pass


def free_port() -> int:
    """A free port below the kernel's ephemeral range: a port bind(0) hands out is free only until a daemon starts
    on it, and any outgoing connection may take it meanwhile (kube-apiserver once found its port taken)."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
        ephemeral_low = int(fh.read().split()[0])
    for port in random.sample(range(10000, max(ephemeral_low, 10200)), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise ClusterError(f"no free port on 127.0.0.1 in 10000..{ephemeral_low - 1}")


def run(*args, check=True, timeout=120, **kw) -> subprocess.CompletedProcess:
    res = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kw)
    if check and res.returncode != 0:
        raise ClusterError(f"{' '.join(map(str, args))} -> {res.returncode}: {res.stderr.strip()[-2000:]}")
    return res


def wait_for(what: str, predicate, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None,
             step: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            value = predicate()
            if value:
                return value
        if proc is not None and proc.poll() is not None:
            raise ClusterError(f"{what}: the process exited ({proc.returncode}); log: "
                               f"{log.read_text(errors='replace')[-3000:] if log else ''}")
        if time.monotonic() > deadline:
            raise ClusterError(f"{what}: not within {timeout:.0f}s"
                               + (f"; log: {log.read_text(errors='replace')[-3000:]}" if log else ""))
        time.sleep(step)


# ---------------------------------------------------------------------------------------------------- PKI

class Pki:
    """A CA of this run and the certificates signed by it (EC P-256, openssl)."""

    def __init__(self, d: Path):
        self.dir = d
        d.mkdir(parents=True, exist_ok=True)
        self.ca = d / "ca.crt"
        self.ca_key = d / "ca.key"
        self._key(self.ca_key)
        run("openssl", "req", "-x509", "-new", "-key", self.ca_key, "-subj", "/CN=ciliumctl-test-ca", "-days", "3",
            "-out", self.ca)
        self.sa_key = d / "sa.key"
        self.sa_pub = d / "sa.pub"
        self._key(self.sa_key)
        run("openssl", "pkey", "-in", self.sa_key, "-pubout", "-out", self.sa_pub)

    @staticmethod
    def _key(path: Path) -> None:
        run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)

    def issue(self, name: str, cn: str, org: str = "", sans: list[str] | None = None) -> tuple[Path, Path]:
        key, crt, csr, ext = (self.dir / f"{name}.{x}" for x in ("key", "crt", "csr", "ext"))
        self._key(key)
        subj = (f"/O={org}" if org else "") + f"/CN={cn}"
        run("openssl", "req", "-new", "-key", key, "-subj", subj, "-out", csr)
        lines = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature,keyEncipherment",
                 "extendedKeyUsage=serverAuth,clientAuth"]
        if sans:
            lines.append("subjectAltName=" + ",".join(sans))
        ext.write_text("\n".join(lines) + "\n")
        run("openssl", "x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key, "-CAcreateserial",
            "-days", "3", "-extfile", ext, "-out", crt)
        return crt, key

    def kubeconfig(self, path: Path, server: str, user: str, crt: Path, key: Path) -> Path:
        b64 = lambda p: base64.b64encode(p.read_bytes()).decode()
        cfg = {
            "apiVersion": "v1", "kind": "Config", "current-context": "ciliumctl-test",
            "clusters": [{"name": "ciliumctl-test", "cluster": {"server": server,
                                                                "certificate-authority-data": b64(self.ca)}}],
            "users": [{"name": user, "user": {"client-certificate-data": b64(crt), "client-key-data": b64(key)}}],
            "contexts": [{"name": "ciliumctl-test", "context": {"cluster": "ciliumctl-test", "user": user}}],
        }
        path.write_text(json.dumps(cfg, indent=1))   # JSON is YAML: kubectl and the Python client read it
        return path


# ----------------------------------------------------------------------------------- sockets across netns

def socket_in_netns(netns_path: str, family=socket.AF_INET, type_=socket.SOCK_STREAM) -> socket.socket:
    """A socket that belongs to another network namespace (this thread goes there and back to make it)."""
    fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with _netns.in_netns(fd):
            return socket.socket(family, type_)
    finally:
        os.close(fd)


def _pump(a: socket.socket, b: socket.socket) -> None:
    def one_way(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    t = threading.Thread(target=one_way, args=(b, a), daemon=True)
    t.start()
    one_way(a, b)
    t.join()
    a.close()
    b.close()


class Forwarder:
    """Accepts on `listener` (any namespace), connects each client to `connect()`'s socket, copies both ways."""

    def __init__(self, listener: socket.socket, connect):
        self.listener = listener
        self.connect = connect
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        try:
            upstream = self.connect(conn)
        except OSError:
            conn.close()
            return
        if upstream is not None:
            _pump(conn, upstream)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()


def http_connect_proxy(path: Path, netns_path: str) -> Forwarder:
    """The API server's egress to nodes: `CONNECT host:port` on a unix socket, dialled from `netns_path`."""
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(64)

    def connect(conn: socket.socket):
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(4096)
            if not chunk or len(head) > 16384:
                conn.close()
                return None
            head += chunk
        request, _, rest = head.partition(b"\r\n\r\n")
        method, target, _ = request.split(b"\r\n", 1)[0].decode().split(" ", 2)
        host, _, port = target.rpartition(":")
        if method != "CONNECT" or ipaddress.ip_address(host) not in NODE_NET:   # nodes only, nothing else
            conn.sendall(b"HTTP/1.1 403 Forbidden\r\n\r\n")
            conn.close()
            return None
        up = socket_in_netns(netns_path)
        up.settimeout(10)
        try:
            up.connect((host, int(port)))
        except OSError:
            up.close()
            conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
            conn.close()
            return None
        up.settimeout(None)
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        if rest:
            up.sendall(rest)
        return up

    return Forwarder(listener, connect)


# ------------------------------------------------------------------------------------------------ cgroups

def cgroup_dirs(name: str) -> list[Path]:
    """`name` in every mounted hierarchy (v1 controllers and the v2 `unified` one)."""
    return [h / name for h in sorted(CGROUP_ROOT.iterdir()) if (h / "cgroup.procs").exists()]


def make_cgroup(name: str) -> None:
    for d in cgroup_dirs(name):
        d.mkdir(exist_ok=True)
        if d.parent.name == "cpuset":    # a v1 cpuset starts empty: give it the root's cpus and mems
            for f in ("cpuset.cpus", "cpuset.mems"):
                with contextlib.suppress(OSError):
                    (d / f).write_text((d.parent / f).read_text())


def cgroup_pids(name: str) -> set[int]:
    pids = set()
    for d in cgroup_dirs(name):
        if d.is_dir():
            for procs in d.rglob("cgroup.procs"):
                with contextlib.suppress(OSError):
                    pids.update(int(p) for p in procs.read_text().split())
    return pids


def kill_cgroup(name: str, timeout: float = 15) -> None:
    """SIGKILL every process in `name` (all hierarchies), until none is left; then remove the cgroups."""
    deadline = time.monotonic() + timeout
    while True:
        pids = cgroup_pids(name)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for d in cgroup_dirs(name):
        if not d.is_dir():
            continue
        for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [d]:
            for _ in range(20):
                try:
                    sub.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)


# -------------------------------------------------------------------------------------------------- nodes

# host paths a node owns: bind mounts of the node's own directories inside its mount namespace
NODE_PATHS = ("/etc/cni/net.d", "/opt/cni/bin", "/var/lib/cni", "/run/netns", "/run/containerd",
              "/var/lib/kubelet", "/var/log/pods", "/var/log/containers", "/run/ciliumctl", "/var/lib/ciliumctl")


class Node:
    def __init__(self, cluster: Cluster, index: int):
        self.cluster = cluster
        self.name = f"node{index}"
        self.ip = str(NODE_NET.network_address + 10 + index)
        self.dir = cluster.dir / self.name
        self.netns = f"{cluster.prefix}-{self.name}"
        self.netns_path = f"/run/netns/{self.netns}"
        self.cgroup = f"{cluster.prefix}-{self.name}"        # kubelet's cgroupRoot and the runtimes' cgroup
        self.holder: subprocess.Popen | None = None
        self.procs: dict[str, subprocess.Popen] = {}
        self.created_dirs: list[Path] = []
        self.forwarder: Forwarder | None = None
        self.sock = self.dir / "containerd.sock"

    # --- network
    def plumb(self) -> None:
        c = self.cluster
        run("ip", "netns", "add", self.netns)
        veth, peer = f"{c.prefix}{self.name[-1]}", f"{c.prefix}{self.name[-1]}p"
        run("ip", "link", "add", veth, "netns", self.netns, "type", "veth", "peer", "name", peer,
            "netns", c.net_ns)
        run("ip", "-n", c.net_ns, "link", "set", peer, "master", "br0", "up")
        run("ip", "-n", self.netns, "link", "set", veth, "name", "eth0")
        run("ip", "-n", self.netns, "addr", "add", f"{self.ip}/{NODE_NET.prefixlen}", "dev", "eth0")
        run("ip", "-n", self.netns, "link", "set", "eth0", "up")
        run("ip", "-n", self.netns, "link", "set", "lo", "up")
        run("ip", "-n", self.netns, "addr", "add", f"{API_SERVICE_IP}/32", "dev", "lo")
        run("ip", "-n", self.netns, "route", "add", "default", "via", str(NODE_NET.network_address + 1))
        run("ip", "netns", "exec", self.netns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        listener = socket_in_netns(self.netns_path)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((API_SERVICE_IP, 443))
        listener.listen(64)
        api_port = c.api_port

        def to_api(_conn):
            up = socket.create_connection(("127.0.0.1", api_port), timeout=10)
            up.settimeout(None)   # only the connect is bounded: a watch stays quiet for minutes
            return up

        self.forwarder = Forwarder(listener, to_api)

    # --- mount namespace, runtime, kubelet
    def _in_node(self, cmd: list[str]) -> list[str]:
        """Run in the node: its mount namespace (holder) and network namespace, inside the node's cgroup."""
        procs = CGROUP_ROOT / "unified" / self.cgroup / "cgroup.procs"
        return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(procs),
                "nsenter", "-t", str(self.holder.pid), "-m", f"--net={self.netns_path}", "--", *cmd]

    def _popen(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = open(self.dir / f"{name}.log", "ab")
        proc = subprocess.Popen(self._in_node(cmd), stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        self.procs[name] = proc
        return proc

    def start_runtime(self) -> None:
        make_cgroup(self.cgroup)
        self.holder = subprocess.Popen(["unshare", "--mount", "--propagation", "slave", "sleep", "1000000"],
                                       stdin=subprocess.DEVNULL)
        wait_for("node mount namespace", lambda: os.readlink(f"/proc/{self.holder.pid}/ns/mnt")
                 != os.readlink("/proc/self/ns/mnt"), 5, step=0.01)
        enter = ["nsenter", "-t", str(self.holder.pid), "-m", "--"]
        # shared inside the node (hostPath volumes with propagation need it), still a slave of the machine's
        run(*enter, "mount", "--make-rshared", "/")
        for target in NODE_PATHS:
            source = self.dir / "host" / target.strip("/")
            source.mkdir(parents=True, exist_ok=True)
            t = Path(target)
            missing = []
            while not t.exists():
                missing.append(t)
                t = t.parent
            self.created_dirs += missing
            run(*enter, "mkdir", "-p", target)
            run(*enter, "mount", "--bind", source, target)
        run(*enter, "mount", "-t", "bpf", "bpf", "/sys/fs/bpf")        # a bpffs instance of this node only
        cfg = self.dir / "containerd.toml"
        cfg.write_text(containerd_config(self.dir / "containerd", PAUSE_IMAGE, self.sock))
        proc = self._popen("containerd", ["containerd", "--config", str(cfg)])
        wait_for(f"{self.name}: containerd", self.sock.exists, 30, proc, self.dir / "containerd.log", 0.05)
        for tar in self.cluster.image_tars:
            run("ctr", "--address", self.sock, "-n", "k8s.io", "images", "import", tar, timeout=300)

    def start_kubelet(self) -> None:
        c = self.cluster
        crt, key = c.pki.issue(self.name, f"system:node:{self.name}", "system:nodes", [f"IP:{self.ip}"])
        kubeconfig = c.pki.kubeconfig(self.dir / "kubelet.kubeconfig", f"https://{API_SERVICE_IP}:443",
                                      f"system:node:{self.name}", crt, key)
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "failCgroupV1": False, "cgroupDriver": "cgroupfs", "cgroupRoot": f"/{self.cgroup}",
            "failSwapOn": False, "address": self.ip, "port": KUBELET_PORT, "readOnlyPort": 0, "healthzPort": 0,
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(c.pki.ca)}},
            "authorization": {"mode": "Webhook"},
            "clusterDomain": "cluster.local", "resolvConf": str(c.dir / "resolv.conf"),
            "tlsCertFile": str(crt), "tlsPrivateKeyFile": str(key),
            # images are imported, never pulled: nothing may collect them; no eviction on a shared disk
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
            "localStorageCapacityIsolation": False, "serializeImagePulls": False,
            "containerRuntimeEndpoint": f"unix://{self.sock}",
            "syncFrequency": "10s", "nodeStatusUpdateFrequency": "5s",
            "enforceNodeAllocatable": [], "protectKernelDefaults": False,
        }
        (self.dir / "kubelet.yaml").write_text(json.dumps(config, indent=1))
        self._popen("kubelet", [str(c.bin / "kubelet"), "--config", str(self.dir / "kubelet.yaml"),
                                "--kubeconfig", str(kubeconfig), "--hostname-override", self.name,
                                "--node-ip", self.ip, "--root-dir", "/var/lib/kubelet", "--v", "1"])

    def stop(self) -> None:
        # the kubelet first, so that it restarts nothing; the whole node goes, no need to be gentle
        kubelet = self.procs.get("kubelet")
        if kubelet is not None and kubelet.poll() is None:
            kubelet.kill()
            kubelet.wait(10)
        # containerd, its shims and every container: by cgroup (shims outlive containerd by design)
        kill_cgroup(self.cgroup)
        for proc in self.procs.values():
            with contextlib.suppress(Exception):
                proc.kill()
                proc.wait(5)
        if self.holder is not None and self.holder.poll() is None:
            self.holder.kill()
            self.holder.wait(5)      # the mount namespace goes, and with it every mount made in it
        if self.forwarder is not None:
            self.forwarder.close()
        run("ip", "netns", "delete", self.netns, check=False)
        for d in self.created_dirs:
            with contextlib.suppress(OSError):
                d.rmdir()


# ------------------------------------------------------------------------------------------------ cluster

class Cluster:
    """start() brings it up (or leaves nothing behind), stop() takes it all down; usable with `with`."""

    def __init__(self, bin_dir: Path, image_tars: list[Path], nodes: int = 1, base: Path | None = None,
                 controllers: bool = True):
        """nodes=0, controllers=False: etcd and the API server only (a few seconds), for tests of the API."""
        self.bin = Path(bin_dir)
        self.image_tars = [Path(t) for t in image_tars]
        self.dir = Path(tempfile.mkdtemp(prefix="cctl-k8s-", dir=base))   # short: unix socket paths live here
        self.prefix = "ck" + os.urandom(2).hex()
        self.net_ns = f"{self.prefix}-net"
        self.procs: dict[str, subprocess.Popen] = {}
        self.nodes = [Node(self, i + 1) for i in range(nodes)]
        self.proxy: Forwarder | None = None
        self.api_port = free_port()
        self.kubeconfig = self.dir / "admin.kubeconfig"
        self.pki: Pki | None = None
        self.controllers = controllers

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _popen(self, name: str, cmd: list) -> subprocess.Popen:
        log = open(self.dir / f"{name}.log", "ab")
        proc = subprocess.Popen([str(c) for c in cmd], stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        log.close()
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> Path:
        return self.dir / f"{name}.log"

    # --- bring up
    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        for tool in ("kube-apiserver",) + (("kube-controller-manager", "kube-scheduler", "kubelet")
                                           if self.controllers or self.nodes else ()):
            if not os.access(self.bin / tool, os.X_OK):
                raise ClusterError(f"{self.bin / tool} is missing (unpack ../shared/tools)")
        for tool in ("etcd", "containerd", "runc", "ctr", "openssl", "nsenter", "unshare"):
            if shutil.which(tool) is None:
                raise ClusterError(f"{tool} is missing: run scripts/setup.sh")
        (self.dir / "resolv.conf").write_text("nameserver 127.0.0.1\n")   # no DNS in this cluster; nothing leaves
        self.pki = pki = Pki(self.dir / "pki")
        api_crt, api_key = pki.issue("apiserver", "kube-apiserver", sans=[
            "IP:127.0.0.1", f"IP:{API_SERVICE_IP}", "DNS:localhost", "DNS:kubernetes", "DNS:kubernetes.default",
            "DNS:kubernetes.default.svc", "DNS:kubernetes.default.svc.cluster.local"])
        admin_crt, admin_key = pki.issue("admin", "ciliumctl-test-admin", "system:masters")
        kubelet_client = pki.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters")
        pki.kubeconfig(self.kubeconfig, f"https://127.0.0.1:{self.api_port}", "admin", admin_crt, admin_key)

        # etcd
        etcd_port, peer_port = free_port(), free_port()
        etcd = self._popen("etcd", [
            "etcd", "--name", "default", "--data-dir", self.dir / "etcd",
            "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"default=http://127.0.0.1:{peer_port}", "--unsafe-no-fsync"])
        wait_for("etcd", lambda: urllib.request.urlopen(f"http://127.0.0.1:{etcd_port}/health", timeout=1)
                 .status == 200, 30, etcd, self.log("etcd"))

        # the network between nodes, and the API server's way to the kubelets through it
        run("ip", "netns", "add", self.net_ns)
        run("ip", "-n", self.net_ns, "link", "set", "lo", "up")
        run("ip", "-n", self.net_ns, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", self.net_ns, "addr", "add", f"{NODE_NET.network_address + 1}/{NODE_NET.prefixlen}",
            "dev", "br0")
        run("ip", "-n", self.net_ns, "link", "set", "br0", "up")
        egress_sock = self.dir / "egress.sock"
        self.proxy = http_connect_proxy(egress_sock, f"/run/netns/{self.net_ns}")
        egress = self.dir / "egress.yaml"
        egress.write_text(json.dumps({
            "apiVersion": "apiserver.k8s.io/v1beta1", "kind": "EgressSelectorConfiguration",
            "egressSelections": [{"name": "cluster", "connection": {
                "proxyProtocol": "HTTPConnect", "transport": {"uds": {"udsName": str(egress_sock)}}}}]}))

        api = self._popen("kube-apiserver", [
            self.bin / "kube-apiserver", "--etcd-servers", f"http://127.0.0.1:{etcd_port}",
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1", "--secure-port", self.api_port,
            "--cert-dir", self.dir / "apiserver-certs",
            "--tls-cert-file", api_crt, "--tls-private-key-file", api_key, "--client-ca-file", pki.ca,
            "--service-account-key-file", pki.sa_pub, "--service-account-signing-key-file", pki.sa_key,
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range", SERVICE_CIDR, "--authorization-mode", "Node,RBAC",
            "--allow-privileged=true", "--kubelet-client-certificate", kubelet_client[0],
            "--kubelet-client-key", kubelet_client[1], "--kubelet-preferred-address-types", "InternalIP",
            "--egress-selector-config-file", egress, "--profiling=false", "--v", "1"])
        ctx = ssl.create_default_context(cafile=str(pki.ca))
        ctx.load_cert_chain(str(admin_crt), str(admin_key))
        self._ssl = ctx
        # /readyz waits for the bootstrap RBAC roles: controllers started before that exit
        wait_for("kube-apiserver /readyz", lambda: self.get_raw("/readyz") == "ok", 60, api,
                 self.log("kube-apiserver"))

        if not self.controllers and not self.nodes:
            return
        common = ["--kubeconfig", self.kubeconfig, "--leader-elect=false", "--bind-address", "127.0.0.1",
                  "--v", "1"]
        self._popen("kube-controller-manager", [
            self.bin / "kube-controller-manager", *common, "--secure-port", free_port(),
            "--cert-dir", self.dir / "kcm-certs", "--service-account-private-key-file", pki.sa_key,
            "--root-ca-file", pki.ca, "--use-service-account-credentials=false",
            "--allocate-node-cidrs", "--cluster-cidr", CLUSTER_CIDR, "--node-cidr-mask-size", "24",
            "--service-cluster-ip-range", SERVICE_CIDR, "--controllers", "*,-bootstrapsigner,-tokencleaner"])
        self._popen("kube-scheduler", [self.bin / "kube-scheduler", *common, "--secure-port", free_port()])

        for node in self.nodes:
            node.dir.mkdir(parents=True)
            node.plumb()
        # each node's containerd imports the images (the longest step): the nodes do it side by side
        errors: list[BaseException] = []

        def runtime(node: Node) -> None:
            try:
                node.start_runtime()
            except BaseException as err:     # re-raised below, in this thread
                errors.append(err)

        threads = [threading.Thread(target=runtime, args=(n,)) for n in self.nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        for node in self.nodes:
            node.start_kubelet()
        for node in self.nodes:
            wait_for(f"{node.name} registered", lambda n=node: self.get_raw(f"/api/v1/nodes/{n.name}"), 60,
                     node.procs["kubelet"], node.dir / "kubelet.log")
        # pods are refused until the controller-manager made the default ServiceAccount
        wait_for("the default ServiceAccount",
                 lambda: self.get_raw("/api/v1/namespaces/default/serviceaccounts/default"), 60,
                 self.procs["kube-controller-manager"], self.log("kube-controller-manager"))
        self.route_pod_cidrs()

    def route_pod_cidrs(self) -> None:
        """The wire's routing table: each node reaches another's pod CIDR through that node's address (what a
        cloud's route table or Cilium's auto-direct-node-routes does)."""
        cidrs = {}
        for node in self.nodes:
            obj = wait_for(f"{node.name} podCIDR", lambda n=node: json.loads(
                self.get_raw(f"/api/v1/nodes/{n.name}")).get("spec", {}).get("podCIDR"), 60)
            cidrs[node.name] = obj
        for node in self.nodes:
            for other in self.nodes:
                if other is not node:
                    run("ip", "-n", node.netns, "route", "replace", cidrs[other.name], "via", other.ip)
            run("ip", "-n", self.net_ns, "route", "replace", cidrs[node.name], "via", node.ip)
        self.pod_cidrs = cidrs

    def user_kubeconfig(self, user: str) -> Path:
        """A kubeconfig of a user with no rights (RBAC denies everything it has not been granted)."""
        crt, key = self.pki.issue(f"user-{user}", user)
        return self.pki.kubeconfig(self.dir / f"{user}.kubeconfig", f"https://127.0.0.1:{self.api_port}", user,
                                   crt, key)

    def get_raw(self, path: str) -> str:
        with urllib.request.urlopen(f"https://127.0.0.1:{self.api_port}{path}", context=self._ssl,
                                    timeout=5) as resp:
            return resp.read().decode()

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig),
                "PATH": f"{self.bin}:{os.environ.get('PATH', '')}"}

    def kubectl(self, *args: str, check: bool = True, timeout: float = 120, input: str | None = None):
        return run("kubectl", "--kubeconfig", self.kubeconfig, *args, check=check, timeout=timeout, input=input)

    # --- take down
    def stop(self) -> None:
        for node in reversed(self.nodes):
            with contextlib.suppress(Exception):
                node.stop()
        for name in ("kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is None:
                proc.kill()      # its state is deleted below: nothing to shut down gracefully
                proc.wait(10)
        if self.proxy is not None:
            self.proxy.close()
        run("ip", "netns", "delete", self.net_ns, check=False)
        if os.environ.get("CILIUMCTL_KEEP_CLUSTER_LOGS"):
            print(f"cluster logs kept in {self.dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def leftovers(self) -> list[str]:
        """What stop() should have removed and did not (empty when all is gone)."""
        left = [f"netns {p.name}" for p in Path("/run/netns").glob(f"{self.prefix}-*")]
        for node in self.nodes:
            left += [f"cgroup {d}" for d in cgroup_dirs(node.cgroup) if d.exists()]
        left += [f"process {n}" for n, p in self.procs.items() if p.poll() is None]
        return left


# ------------------------------------------------------------------------------ `make cluster` for people

def build_images() -> list[Path]:
    """scripts/image.sh (cached): the agent, test and pause images as tars."""
    res = run(REPO / "scripts" / "image.sh", timeout=1800)
    return [Path(line.split()[1]) for line in res.stdout.splitlines() if line.strip()]


def install_agent(cluster: Cluster, timeout: float = 300) -> str:
    res = run(REPO / ".venv" / "bin" / "ciliumctl", "install", "--kubeconfig", cluster.kubeconfig,
              "--image", "ciliumctl:local", "--image-pull-policy", "Never", "--wait", timeout=timeout)
    return res.stdout + res.stderr


def default_bin() -> Path:
    """The Kubernetes binaries: ../shared/tools unpacked into .tools/bin (shared/ is read-only in CI)."""
    unpack = REPO.parent / "shared" / "tools" / "unpack.sh"
    if unpack.exists():
        run(unpack, REPO / ".tools" / "bin", timeout=600)
    return REPO / ".tools" / "bin"


def _serve(state: Path, nodes: int) -> None:
    """The supervisor of `make cluster`: brings the cluster up, installs the agent, holds it until SIGTERM."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    cluster = Cluster(default_bin(), build_images(), nodes=nodes)
    try:
        cluster.start()
        print(install_agent(cluster), flush=True)
        state.write_text(json.dumps({"pid": os.getpid(), "kubeconfig": str(cluster.kubeconfig),
                                     "dir": str(cluster.dir), "nodes": [n.name for n in cluster.nodes]}))
        while True:
            time.sleep(3600)
    finally:
        state.unlink(missing_ok=True)
        cluster.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="scripts/cluster.sh", description="A real Kubernetes cluster on this machine.")
    p.add_argument("action", choices=["up", "down", "serve"])
    p.add_argument("--nodes", type=int, default=int(os.environ.get("NODES", "1")))
    p.add_argument("--state", type=Path, default=REPO / ".tools" / "cluster.json")
    args = p.parse_args(argv)
    state, log = args.state, args.state.with_suffix(".log")
    current = json.loads(state.read_text()) if state.exists() else None
    if current and not _alive(current["pid"]):
        state.unlink()
        current = None
    if args.action == "serve":
        _serve(state, args.nodes)
        return 0
    if args.action == "down":
        if not current:
            print("no cluster is up")
            return 0
        os.kill(current["pid"], signal.SIGTERM)
        deadline = time.monotonic() + 120
        while _alive(current["pid"]) and time.monotonic() < deadline:
            time.sleep(0.2)
        print("cluster down" if not _alive(current["pid"]) else f"cluster supervisor {current['pid']} still runs")
        return 0
    if os.geteuid() != 0:
        print("cluster: run as root (namespaces, mounts, cgroups)", file=sys.stderr)
        return 2
    if not current:
        state.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as out:
            sup = subprocess.Popen([sys.executable, __file__, "serve", "--nodes", str(args.nodes), "--state",
                                    str(state)], stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
        print(f"starting a {args.nodes}-node cluster (log {log}) ...", file=sys.stderr)
        while not state.exists():
            if sup.poll() is not None:
                print(f"cluster: failed; the end of {log}:\n{log.read_text()[-3000:]}", file=sys.stderr)
                return 1
            time.sleep(0.5)
        current = json.loads(state.read_text())
    print(f"# nodes {', '.join(current['nodes'])}; agent installed; images ciliumctl:local, ciliumctl-test:local "
          f"(imagePullPolicy: Never); `make cluster-down` removes it all", file=sys.stderr)
    print(f"export KUBECONFIG={current['kubeconfig']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
