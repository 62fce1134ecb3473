"""The host firewall (issue 13) on a sandbox node, with real packets: the node namespace plays the node, its two
uplink veths (`install --devices`) lead to a namespace that plays another node (`--remote-nodes`) and one that
plays the world. Programs go only on those veths and the endpoints' (all inside the test's namespaces).

The seed's policy: a CiliumClusterwideNetworkPolicy with a nodeSelector lets only metrics-server reach the kubelet
(a listener in the node namespace on 10250); the other node may reach 22. Another endpoint and the world may not."""

import json
import sys
import textwrap

import pytest

pytestmark = pytest.mark.root

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


def _uplinks(node) -> tuple[str, str, list[str]]:
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


def _listen(node, port: int):
    """A TCP listener on every address of the node namespace (the kubelet, sshd)."""
    import subprocess

    code = ("import socket\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            f"s.bind(('0.0.0.0', {port})); s.listen(64)\nwhile True: s.accept()[0].close()")
    p = subprocess.Popen(["ip", "netns", "exec", node.name, sys.executable, "-c", code],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    node.servers.append(p)
    return p


def _connects_from_ns(ns: str, ip: str, port: int) -> bool:
    from support.shell import sh

    code = (f"import socket, sys\ntry: socket.create_connection(('{ip}', {port}), timeout=1).close()\n"
            "except OSError: sys.exit(1)")
    return sh("ip", "netns", "exec", ns, sys.executable, "-c", code, check=False).returncode == 0


def _ready(node, port: int) -> None:
    import time

    from support.shell import sh

    code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1).close()"
    for _ in range(50):
        if sh("ip", "netns", "exec", node.name, sys.executable, "-c", code, check=False).returncode == 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"the listener on {port} in the node namespace did not start")


def test_host_firewall_seed_policy_end_to_end(node, tmp_path):
    world, remote, devs = _uplinks(node)
    node.cli("install", "--no-agent", "--devices", ",".join(devs), "--host-firewall",
             "--node-labels", "node-role.kubernetes.io/worker=,kubernetes.io/hostname=n1",
             "--remote-nodes", f"{REMOTE_NET}.2")
    node.cli("endpoint", "add", "metrics", "-n", "kube-system", "-l", "k8s-app=metrics-server")
    node.cli("endpoint", "add", "other", "-l", "app=other")
    for port in (10250, 22):
        _listen(node, port)
        _ready(node, port)

    # nothing selects the host yet: everyone reaches it
    assert node.connect("other", NODE_IP, 10250)
    assert _connects_from_ns(world, NODE_IP, 10250)

    policy = tmp_path / "seed.yaml"
    policy.write_text(SEED)
    node.cli("policy", "apply", "-f", str(policy))

    assert node.connect("metrics", NODE_IP, 10250)             # metrics-server -> kubelet
    assert not node.connect("metrics", NODE_IP, 22)            # only 10250
    assert not node.connect("other", NODE_IP, 10250)           # another endpoint
    assert not _connects_from_ns(world, NODE_IP, 10250)        # the world, through the device
    assert _connects_from_ns(remote, f"{REMOTE_NET}.1", 22)    # the other node: remote-node rule
    assert not _connects_from_ns(remote, f"{REMOTE_NET}.1", 10250)

    # the drops are the host's: on the world's device, identity world -> host
    with node.ring() as ring:
        ring.drain()
        assert not _connects_from_ns(world, NODE_IP, 10250)
        events = ring.events()
    drops = [e for e in events if e.type == 1 and e.dst_identity == 1]
    assert drops and all(e.src_identity == 2 and e.subtype == 133 for e in drops)

    # audit: the same denials forwarded and reported as AUDIT
    node.cli("install", "--no-agent", "--host-firewall-audit")
    assert _connects_from_ns(world, NODE_IP, 10250)
    assert node.connect("other", NODE_IP, 10250)
    with node.ring() as ring:
        ring.drain()
        assert _connects_from_ns(world, NODE_IP, 22)
        events = ring.events()
    verdicts = [e for e in events if e.type == 5 and e.dst_identity == 1]
    assert verdicts and all(e.verdict == 4 for e in verdicts)          # AUDIT
    assert not [e for e in events if e.type == 1]

    # off: nothing of the host is enforced any more, the devices carry only NodePort
    node.cli("install", "--no-agent", "--no-host-firewall")
    assert _connects_from_ns(world, NODE_IP, 10250)
    assert node.connect("other", NODE_IP, 22)
    status = json.loads(node.cli("status", "-o", "json").stdout)
    assert status is not None
