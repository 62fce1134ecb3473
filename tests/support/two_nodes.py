"""Two nodes and a client for NodePort tests (lib/nodeport.h), all namespaces under a sandbox's prefix (removed with
it): node A is the sandbox node with its pods (10.11.0.0/24); the client `<prefix>x` (192.168.77.2) sits behind
node A's device `<prefix>d` (192.168.77.1); node B `<prefix>m` (192.168.78.2) behind node A's device `<prefix>e`
(192.168.78.1), with a pod `<prefix>r` (10.12.0.1) in its pod CIDR 10.12.0.0/24, which node A routes via node B as
a cluster routes the other nodes' pod CIDRs. Both devices carry the NodePort programs (install --devices)."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass

from ciliumctl.endpoints.model import Endpoint

from .pods import Pod
from .shell import sh

NODE_IP, CLIENT_IP = "192.168.77.1", "192.168.77.2"
NODE_IP_TO_B, NODE_B_IP = "192.168.78.1", "192.168.78.2"
REMOTE_POD = "10.12.0.1"


@dataclass
class TwoNodes:
    client: Pod
    remote: Pod          # the pod on node B


def build_two_nodes(sandbox, datapath) -> TwoNodes:
    """The client, node B and its pod beside the sandbox node; the NodePort programs on node A's two devices."""
    p = sandbox.prefix
    client, node_b, remote = f"{p}x", f"{p}m", f"{p}r"
    for ns in (client, node_b, remote):
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    # the client behind node A's first device
    sh("ip", "-n", sandbox.node, "link", "add", f"{p}d", "type", "veth", "peer", "name", "eth0", "netns", client)
    sh("ip", "-n", sandbox.node, "addr", "add", f"{NODE_IP}/24", "dev", f"{p}d")
    sh("ip", "-n", sandbox.node, "link", "set", f"{p}d", "up")
    sh("ip", "-n", client, "addr", "add", f"{CLIENT_IP}/24", "dev", "eth0")
    sh("ip", "-n", client, "link", "set", "eth0", "up")
    # node B behind the second one; its pod CIDR routed through it
    sh("ip", "-n", sandbox.node, "link", "add", f"{p}e", "type", "veth", "peer", "name", "eth0", "netns", node_b)
    sh("ip", "-n", sandbox.node, "addr", "add", f"{NODE_IP_TO_B}/24", "dev", f"{p}e")
    sh("ip", "-n", sandbox.node, "link", "set", f"{p}e", "up")
    sh("ip", "-n", node_b, "addr", "add", f"{NODE_B_IP}/24", "dev", "eth0")
    sh("ip", "-n", node_b, "link", "set", "eth0", "up")
    sh("ip", "-n", sandbox.node, "route", "add", "10.12.0.0/24", "via", NODE_B_IP)
    # node B's pod: a /32 on node B's side of its veth, the pod's default route out of it
    sh("ip", "netns", "exec", node_b, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    sh("ip", "-n", node_b, "link", "add", "pod0", "type", "veth", "peer", "name", "eth0", "netns", remote)
    sh("ip", "-n", node_b, "link", "set", "pod0", "up")
    sh("ip", "netns", "exec", node_b, "sysctl", "-qw", "net.ipv4.conf.pod0.proxy_arp=1")   # the pod's way out
    sh("ip", "-n", node_b, "route", "add", f"{REMOTE_POD}/32", "dev", "pod0")
    sh("ip", "-n", remote, "addr", "add", f"{REMOTE_POD}/32", "dev", "eth0")
    sh("ip", "-n", remote, "link", "set", "eth0", "up")
    sh("ip", "-n", remote, "route", "add", "default", "dev", "eth0")
    datapath.attach_device(f"{p}d")
    datapath.attach_device(f"{p}e")
    return TwoNodes(Pod(Endpoint(id=0, name="client", ipv4=CLIENT_IP), client),
                    Pod(Endpoint(id=0, name="remote", ipv4=REMOTE_POD), remote))


def peer_server(sandbox, pod, port):
    """A TCP server answering each connection with "<its own address> <the peer it sees>", then echoing."""
    srv = pod.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(64)
    srv.settimeout(0.2)
    stop = []

    def run():
        while not stop:
            try:
                conn, peer = srv.accept()
            except OSError:
                continue
            with conn:
                try:
                    conn.sendall(f"{pod.ip} {peer[0]}".encode().ljust(32))
                    conn.settimeout(5)
                    while data := conn.recv(4096):
                        conn.sendall(data)
                except OSError:
                    pass

    t = threading.Thread(target=run, daemon=True)
    t.start()

    def close():
        stop.append(1)
        t.join(2)
        srv.close()

    sandbox.closers.append(close)


def ask(client, ip, port, timeout=2.0, sport=0):
    """(backend, the address the backend saw as its peer, the peer the client saw); sport: the client's port"""
    s = client.socket()
    s.settimeout(timeout)
    try:
        if sport:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", sport))
        s.connect((ip, port))
        backend, seen = s.recv(32).decode().split()
        return backend, seen, s.getpeername()
    finally:
        s.close()
