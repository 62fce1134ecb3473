"""An in-process sandbox node with pods, for datapath tests: a node netns `<prefix>n` and pod namespaces
`<prefix>p<i>` joined by veth pairs `<prefix>h<i>`, routed like Cilium (pod /32, default via 169.254.1.1; host
side proxy_arp and a /32 route back), a pin directory /sys/fs/bpf/<prefix>, and echo servers on the pods. The
core under test runs in this process, pointed at the sandbox through CILIUMCTL_* variables."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ciliumctl.endpoints.model import Endpoint
from ciliumctl.policy.resolved import DirectionPolicy, EndpointPolicy, PolicyEntry, PortRange, ResolvedState, RuleOrigin

from . import netns
from .netns import in_netns
from .shell import sh


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

    def socket_raw(self, proto: int = 1) -> socket.socket:   # 1: IPPROTO_ICMP
        with in_netns(self.ns):
            return socket.socket(socket.AF_INET, socket.SOCK_RAW, proto)

    def ping(self, ip: str, count: int = 1) -> bool:
        res = subprocess.run(["ip", "netns", "exec", self.ns, "ping", "-c", str(count), "-i", "0.2", "-W", "1",
                              "-n", "-q", ip], capture_output=True)
        return res.returncode == 0

    def tcp_server(self, port: int) -> TcpEcho:
        return TcpEcho(self, port)

    def tcp_ok(self, peer: Pod, port: int, timeout: float = 1.0) -> bool:
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

    def udp_ok(self, peer: Pod, port: int, timeout: float = 0.7) -> bool:
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


class _Echo:
    """A server on a pod's socket, served by a thread until close()."""

    def __init__(self, sock: socket.socket, port: int, backlog: int = 0):
        self.sock = sock
        self.sock.bind(("0.0.0.0", port))
        if backlog:
            self.sock.listen(backlog)
        self.sock.settimeout(0.2)
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop:
            with contextlib.suppress(OSError):
                self._serve_one()

    def _serve_one(self):
        raise NotImplementedError

    def close(self):
        self._stop = True
        self._thread.join(2)
        self.sock.close()


class TcpEcho(_Echo):
    """Accepts connections and echoes what it receives."""

    def __init__(self, pod: Pod, port: int):
        sock = pod.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        super().__init__(sock, port, backlog=64)

    def _serve_one(self):
        conn, _ = self.sock.accept()
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


class UdpEcho(_Echo):
    def __init__(self, pod: Pod, port: int):
        super().__init__(pod.socket(socket.SOCK_DGRAM), port)

    def _serve_one(self):
        data, addr = self.sock.recvfrom(65535)
        self.sock.sendto(data, addr)


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


def _build(sb: Sandbox, n_pods: int) -> None:
    node = sb.node
    sh("ip", "netns", "add", node)
    sh("ip", "-n", node, "link", "set", "lo", "up")
    sh("ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    for i in range(1, n_pods + 1):
        ns, host = f"{sb.prefix}p{i}", f"{sb.prefix}h{i}"
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


def teardown_sandbox(sb: Sandbox) -> None:
    for close in sb.closers:
        with contextlib.suppress(Exception):
            close()
    netns.delete(*netns.named(sb.prefix))    # the pods', the node's, and any a failed build left
    shutil.rmtree(sb.pin_dir, ignore_errors=True)    # pins (and nested dirs) on bpffs unlink like files


@contextlib.contextmanager
def sandbox(monkeypatch, tmp_path: Path, n_pods: int):
    """Pods 1..n (identities 1001.., 10.11.0.1..) on a sandbox node; the env points the core at it. The core
    enters the node netns: the thread comes back to its own namespace afterwards, also on failure."""
    import ciliumctl.base.netns as nodens

    prefix = netns.unique_prefix()
    sb = Sandbox(prefix=prefix, node=f"{prefix}n", pin_dir=f"/sys/fs/bpf/{prefix}", state_dir=str(tmp_path / "state"))
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _build(sb, n_pods)
        monkeypatch.setenv("CILIUMCTL_NODE_NETNS", sb.node)
        monkeypatch.setenv("CILIUMCTL_BPFFS_DIR", sb.pin_dir)
        monkeypatch.setenv("CILIUMCTL_STATE_DIR", sb.state_dir)
        monkeypatch.setenv("CILIUMCTL_RUN_DIR", str(tmp_path / "run"))
        yield sb
    finally:
        nodens.setns_fd(home)
        os.close(home)
        nodens._entered = None
        teardown_sandbox(sb)
