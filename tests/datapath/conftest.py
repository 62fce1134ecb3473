"""A sandbox node for datapath tests: a node netns and endpoint netns with veth pairs, routed like Cilium
(pod /32, default via 169.254.1.1; host side proxy_arp and a /32 route back), all created inside namespaces
named cctl<rand>, a per-test bpffs pin directory and state directory, and teardown that always runs."""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field

import pytest

from ciliumctl.endpoints.model import Endpoint
from ciliumctl.policy.resolved import (DirectionPolicy, EndpointPolicy, PolicyEntry, PortRange, ResolvedState,
                                       RuleOrigin)

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(list(args), capture_output=True, text=True)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {res.stderr.strip()}")
    return res


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


@contextlib.contextmanager
def in_netns(name: str):
    """Run the block in netns `name` (this thread only); sockets made here stay in that namespace."""
    back = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        _setns(target)
        yield
    finally:
        _setns(back)
        os.close(target)
        os.close(back)


@dataclass
class Pod:
    ep: Endpoint
    ns: str

    @property
    def ip(self) -> str:
        return self.ep.ipv4

    @property
    def identity(self) -> int:
        return self.ep.identity

    def socket(self, kind=socket.SOCK_STREAM) -> socket.socket:
        with in_netns(self.ns):
            return socket.socket(socket.AF_INET, kind)

    def socket_raw(self, proto: int = 1) -> "socket.socket":   # 1: IPPROTO_ICMP
        with in_netns(self.ns):
            return socket.socket(socket.AF_INET, socket.SOCK_RAW, proto)

    def ping(self, ip: str, count: int = 1) -> bool:
        res = subprocess.run(["ip", "netns", "exec", self.ns, "ping", "-c", str(count), "-i", "0.2", "-W", "1",
                              "-n", "-q", ip], capture_output=True)
        return res.returncode == 0

    def tcp_server(self, port: int) -> "TcpEcho":
        return TcpEcho(self, port)

    def tcp_ok(self, peer: "Pod", port: int, timeout: float = 1.0) -> bool:
        """A connect + one request/response exchange."""
        s = self.socket()
        s.settimeout(timeout)
        try:
            s.connect((peer.ip, port))
            s.sendall(b"ping\n")
            return s.recv(16) == b"ping\n"
        except OSError:
            return False
        finally:
            s.close()

    def udp_ok(self, peer: "Pod", port: int, timeout: float = 0.7) -> bool:
        s = self.socket(socket.SOCK_DGRAM)
        s.settimeout(timeout)
        try:
            s.sendto(b"hello", (peer.ip, port))
            data, _ = s.recvfrom(64)
            return data == b"hello"
        except OSError:
            return False
        finally:
            s.close()


class TcpEcho:
    """An echo server on a pod: accepts connections and echoes what it receives."""

    def __init__(self, pod: Pod, port: int):
        self.sock = pod.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("0.0.0.0", port))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn):
        conn.settimeout(10)
        with conn:
            try:
                while data := conn.recv(4096):
                    conn.sendall(data)
            except OSError:
                pass

    def close(self):
        self._stop = True
        self._thread.join(2)
        self.sock.close()


class UdpEcho:
    def __init__(self, pod: Pod, port: int):
        self.sock = pod.socket(socket.SOCK_DGRAM)
        self.sock.bind(("0.0.0.0", port))
        self.sock.settimeout(0.2)
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop:
            try:
                data, addr = self.sock.recvfrom(65535)
                self.sock.sendto(data, addr)
            except OSError:
                continue

    def close(self):
        self._stop = True
        self._thread.join(2)
        self.sock.close()


@dataclass
class Sandbox:
    prefix: str
    node: str
    pin_dir: str
    state_dir: str
    pods: list[Pod] = field(default_factory=list)
    closers: list = field(default_factory=list)

    def ipcache(self) -> dict[str, int]:
        return {f"{p.ip}/32": p.identity for p in self.pods}

    def state(self, revision: int, policies: dict[int, tuple[bool, list[PolicyEntry], bool, list[PolicyEntry]]],
              audit: bool = False, ipcache: dict[str, int] | None = None) -> ResolvedState:
        """policies: endpoint id -> (ingress enforced, ingress entries, egress enforced, egress entries);
        endpoints not named are present and unenforced."""
        eps = {}
        for pod in self.pods:
            ing_on, ing, eg_on, eg = policies.get(pod.ep.id, (False, [], False, []))
            eps[pod.ep.id] = EndpointPolicy(pod.ep.id, pod.identity, DirectionPolicy(ing_on, list(ing)),
                                            DirectionPolicy(eg_on, list(eg)))
        return ResolvedState(revision=revision, identities={p.identity: frozenset({f"k8s:app={p.ep.name}"})
                                                             for p in self.pods},
                             ipcache=self.ipcache() if ipcache is None else ipcache, endpoints=eps, audit=audit)

    def tcp_server(self, pod: Pod, port: int) -> TcpEcho:
        srv = TcpEcho(pod, port)
        self.closers.append(srv.close)
        return srv

    def udp_server(self, pod: Pod, port: int) -> UdpEcho:
        srv = UdpEcho(pod, port)
        self.closers.append(srv.close)
        return srv


def entry(identity: int, proto: int = 0, lo: int = 0, hi: int = 0, deny: bool = False, name: str = "p",
          section: str = "ingress", index: int = 0) -> PolicyEntry:
    return PolicyEntry(identity, PortRange(proto, lo, hi if hi else lo), deny,
                       (RuleOrigin("CiliumNetworkPolicy", name, "default", section, index),))


def _build(prefix: str, n_pods: int) -> Sandbox:
    node = f"{prefix}n"
    sb = Sandbox(prefix=prefix, node=node, pin_dir=f"/sys/fs/bpf/{prefix}", state_dir="")
    sh("ip", "netns", "add", node)
    sh("ip", "-n", node, "link", "set", "lo", "up")
    sh("ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    for i in range(1, n_pods + 1):
        ns, host = f"{prefix}p{i}", f"{prefix}h{i}"
        ip = f"10.11.0.{i}"
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", node, "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "addr", "add", f"{ip}/32", "dev", "eth0")
        sh("ip", "-n", ns, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
        sh("ip", "-n", ns, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
        sh("ip", "-n", node, "link", "set", host, "up")
        sh("ip", "netns", "exec", node, "sysctl", "-qw", f"net.ipv4.conf.{host}.proxy_arp=1")
        sh("ip", "-n", node, "route", "add", f"{ip}/32", "dev", host)
        # the node has no route to 169.254.1.1 for proxy_arp to answer with: pin the neighbours both ways
        host_mac = sh("ip", "netns", "exec", node, "cat", f"/sys/class/net/{host}/address").stdout.strip()
        pod_mac = sh("ip", "netns", "exec", ns, "cat", "/sys/class/net/eth0/address").stdout.strip()
        sh("ip", "-n", ns, "neigh", "replace", "169.254.1.1", "lladdr", host_mac, "dev", "eth0", "nud", "permanent")
        sh("ip", "-n", node, "neigh", "replace", ip, "lladdr", pod_mac, "dev", host, "nud", "permanent")
        idx = int(sh("ip", "netns", "exec", node, "cat", f"/sys/class/net/{host}/ifindex").stdout)
        ep = Endpoint(id=i, name=f"pod{i}", labels={"app": f"pod{i}"}, ipv4=ip, netns=f"/run/netns/{ns}",
                      host_ifname=host, host_ifindex=idx, identity=1000 + i)
        sb.pods.append(Pod(ep, ns))
    return sb


def teardown_sandbox(sb: Sandbox) -> None:
    for close in sb.closers:
        with contextlib.suppress(Exception):
            close()
    for pod in sb.pods:
        sh("ip", "netns", "del", pod.ns, check=False)
    sh("ip", "netns", "del", sb.node, check=False)
    shutil.rmtree(sb.pin_dir, ignore_errors=True)    # pins (and nested dirs) on bpffs unlink like files


@contextlib.contextmanager
def _sandbox(monkeypatch, tmp_path, n_pods: int):
    import ciliumctl.base.netns as nodens

    prefix = f"cctl{secrets.token_hex(2)}"
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    sb = None
    try:
        sb = _build(prefix, n_pods)
        sb.state_dir = str(tmp_path / "state")
        monkeypatch.setenv("CILIUMCTL_NODE_NETNS", sb.node)
        monkeypatch.setenv("CILIUMCTL_BPFFS_DIR", sb.pin_dir)
        monkeypatch.setenv("CILIUMCTL_STATE_DIR", sb.state_dir)
        monkeypatch.setenv("CILIUMCTL_RUN_DIR", str(tmp_path / "run"))
        yield sb
    finally:
        # the core entered the node netns: come back, so later tests run where they started
        _setns(home)
        os.close(home)
        nodens._entered = None
        if sb is not None:
            teardown_sandbox(sb)
        else:
            for leftover in sh("ip", "netns", "list", check=False).stdout.split():
                if leftover.startswith(prefix):
                    sh("ip", "netns", "del", leftover, check=False)


@pytest.fixture
def sandbox(monkeypatch, tmp_path):
    """Three pods (ids 1..3, identities 1001..1003, 10.11.0.1..3) on a sandbox node; env points the core at it."""
    with _sandbox(monkeypatch, tmp_path, 3) as sb:
        yield sb


@pytest.fixture
def sandbox4(monkeypatch, tmp_path):
    """Like `sandbox` with four pods (tests make some of them hosts outside the cluster)."""
    with _sandbox(monkeypatch, tmp_path, 4) as sb:
        yield sb


@pytest.fixture
def datapath(sandbox):
    """The datapath loaded into the sandbox's pin dir, all pods attached (nothing enforced yet)."""
    from ciliumctl.datapath.loader import Datapath

    dp = Datapath.open()
    for pod in sandbox.pods:
        dp.attach(pod.ep)
    yield dp
    dp.close()


@pytest.fixture
def events(datapath, sandbox):
    from ciliumctl.datapath.ringbuf import RingReader

    reader = RingReader(os.path.join(sandbox.pin_dir, "events"))
    yield reader
    reader.close()


def wait_until(pred, timeout: float = 2.0, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


__all__ = ["entry", "sh", "in_netns", "wait_until", "teardown_sandbox"]
