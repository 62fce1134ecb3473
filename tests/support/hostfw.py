"""The host firewall's test world (issue 13): the seed's policy and a node namespace with two uplinks, one to a
namespace that plays the world, one to a namespace that plays another node. Everything lives in namespaces named
after the sandbox node (`<node>-w`, `<node>-r`), which its teardown deletes with their veths."""

import sys
import textwrap

WORLD_NET, REMOTE_NET = "192.168.81", "192.168.82"
NODE_IP = f"{WORLD_NET}.1"

SEED = textwrap.dedent("""\
    apiVersion: cilium.io/v2
    kind: CiliumClusterwideNetworkPolicy
    metadata:
      name: kubelet-from-metrics-server
    spec:
      nodeSelector:
        matchLabels:
          node-role.kubernetes.io/worker: ""
      ingress:
      - fromEndpoints:
        - matchLabels:
            k8s-app: metrics-server
            k8s:io.kubernetes.pod.namespace: kube-system
        toPorts:
        - ports:
          - port: "10250"
            protocol: TCP
      - fromEntities: [remote-node]
        toPorts:
        - ports:
          - port: "22"
            protocol: TCP
    """)

# the host lets in other nodes labelled role=db on 22 (fromNodes: needs --enable-node-selector-labels)
FROM_DB_NODES = {"apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy", "metadata": {"name": "n"},
                 "spec": {"nodeSelector": {}, "ingress": [{"fromNodes": [{"matchLabels": {"role": "db"}}],
                                                           "toPorts": [{"ports": [{"port": "22",
                                                                                   "protocol": "TCP"}]}]}]}}


def uplinks(node) -> tuple[str, str, list[str]]:
    """Two veths from the node namespace: to `<node>-w` (the world) and `<node>-r` (another node). Both are
    removed with the node (its teardown deletes every `<node>-*` namespace, and their veths with them)."""
    from support.shell import sh

    world, remote = f"{node.name}-w", f"{node.name}-r"
    devs = []
    for ns, net, dev in ((world, WORLD_NET, f"{node.name}w"), (remote, REMOTE_NET, f"{node.name}r")):
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", node.name, "link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "-n", node.name, "addr", "add", f"{net}.1/24", "dev", dev)
        sh("ip", "-n", node.name, "link", "set", dev, "up")
        sh("ip", "-n", ns, "addr", "add", f"{net}.2/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        devs.append(dev)
    return world, remote, devs


def listen(node, port: int):
    """A TCP listener on every address of the node namespace (the kubelet, sshd)."""
    import subprocess

    # an echo server: a connection stays open as long as its client keeps it (the lock-out guard's test holds one)
    code = ("import socket, threading\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            f"s.bind(('0.0.0.0', {port})); s.listen(64)\n"
            "def echo(c):\n while (d := c.recv(64)): c.sendall(d)\n c.close()\n"
            "while True: threading.Thread(target=echo, args=(s.accept()[0],), daemon=True).start()")
    p = subprocess.Popen(["ip", "netns", "exec", node.name, sys.executable, "-c", code],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    node.servers.append(p)
    return p


def connects_from_ns(ns: str, ip: str, port: int) -> bool:
    from support.shell import sh

    code = (f"import socket, sys\ntry: socket.create_connection(('{ip}', {port}), timeout=1).close()\n"
            "except OSError: sys.exit(1)")
    return sh("ip", "netns", "exec", ns, sys.executable, "-c", code, check=False).returncode == 0


def ready(node, port: int) -> None:
    import time

    from support.shell import sh

    code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1).close()"
    for _ in range(50):
        if sh("ip", "netns", "exec", node.name, sys.executable, "-c", code, check=False).returncode == 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"the listener on {port} in the node namespace did not start")


class HeldConnection:
    """A TCP connection from namespace `ns` held open; alive() sends a byte and waits a second for its echo."""

    CODE = ("import socket, sys\ns = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1)\n"
            "print('up', s.getsockname()[1], flush=True)\n"
            "for _ in sys.stdin:\n"
            " try: s.sendall(b'x'); ok = s.recv(1) == b'x'\n"
            " except OSError: ok = False\n"
            " print('ok' if ok else 'cut', flush=True)")

    def __init__(self, node, ns: str, ip: str, port: int):
        import subprocess

        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", self.CODE, ip, str(port)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        node.servers.append(self.proc)          # killed with the node
        first = self.proc.stdout.readline().split()
        assert first[:1] == ["up"], "the held connection did not come up"
        self.port = int(first[1])

    def alive(self) -> bool:
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip() == "ok"


def udp_echo(node, ns: str, port: int) -> None:
    """A UDP echo server in namespace `ns` (killed with the node), bound when this returns."""
    import subprocess

    code = ("import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"s.bind(('0.0.0.0', {port})); print('up', flush=True)\n"
            "while True:\n d, a = s.recvfrom(64); s.sendto(d, a)")
    proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    node.servers.append(proc)
    assert proc.stdout.readline().strip() == "up", "the UDP echo server did not start"


class HeldUdp(HeldConnection):
    """A UDP socket in namespace `ns` connect()ed to ip:port; alive() sends a byte and waits a second for its echo
    (three tries: a datagram may be lost)."""

    CODE = ("import socket, sys\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)\n"
            "s.connect((sys.argv[1], int(sys.argv[2])))\n"
            "print('up', s.getsockname()[1], flush=True)\n"
            "for _ in sys.stdin:\n"
            " ok = False\n"
            " for _ in range(3):\n"
            "  try: s.send(b'x'); ok = s.recv(1) == b'x'\n"
            "  except OSError: ok = False\n"
            "  if ok: break\n"
            " print('ok' if ok else 'cut', flush=True)")


class NodeNamespace:
    """A namespace that plays the node without ciliumctl on it, with the uplinks of uplinks(): for cluster-mode
    tests whose agent runs in the test's process over a recording datapath, where the lock-out guard reads this
    namespace's socket tables (table_reader). Removed with its processes on leaving, also on failure."""

    def __init__(self):
        from support import netns

        self.name = netns.unique_prefix()
        self.servers: list = []

    def __enter__(self):
        from support.shell import sh

        sh("ip", "netns", "add", self.name)
        sh("ip", "-n", self.name, "link", "set", "lo", "up")
        return self

    def __exit__(self, *exc):
        from support import netns

        for p in self.servers:
            p.kill()
            p.wait(timeout=5)
        netns.delete(*netns.named(f"{self.name}-"), self.name)

    def table_reader(self, pid: int):
        """live_connections() of this namespace: the kernel's tables read through a process that lives in it."""
        from ciliumctl.node.hostfw import lockout

        def read() -> list:
            with open(f"/proc/{pid}/net/tcp") as tcp, open(f"/proc/{pid}/net/udp") as udp:
                return lockout.live_connections(tcp.read(), udp.read())
        return read
