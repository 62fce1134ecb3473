"""Two agents on one machine: two sandbox nodes (each a network namespace with its own pods behind it, joined by
a veth "wire"), one fake API server. They agree on identities through CiliumIdentity objects and enforce a policy
between pods on different nodes, with real packets through the real datapath."""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fakeapi import FakeApiServer, in_netns

pytestmark = [pytest.mark.root, pytest.mark.slow]

CLI = str(Path(sys.executable).parent / "ciliumctl")
WIRE = {"a": "10.231.0.1", "b": "10.231.0.2"}
POOLS = {"a": "10.210.1.0/24", "b": "10.210.2.0/24"}

ALLOW_CLIENT = """\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: web-from-client
spec:
  endpointSelector:
    matchLabels:
      app: web
  ingress:
  - fromEndpoints:
    - matchLabels:
        app: client
    toPorts:
    - ports:
      - port: "8080"
        protocol: TCP
"""


def sh(*args, check=True):
    res = subprocess.run(list(args), capture_output=True, text=True)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(args)} -> {res.returncode}: {res.stderr.strip()}")
    return res


def wait_for(predicate, timeout=20.0, interval=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class SandboxNode:
    def __init__(self, key: str, tmp: Path):
        self.key = key
        self.name = f"cctl{secrets.token_hex(2)}"
        self.bpffs = Path(f"/sys/fs/bpf/{self.name}")
        self.env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "NO_COLOR")}
        self.env.update(CILIUMCTL_NODE_NETNS=self.name, CILIUMCTL_STATE_DIR=str(tmp / key / "state"),
                        CILIUMCTL_RUN_DIR=str(tmp / key / "run"), CILIUMCTL_BPFFS_DIR=str(self.bpffs),
                        CILIUMCTL_POOL=POOLS[key], NO_COLOR="1")
        self.log = tmp / f"agent-{key}.log"
        self.agent: subprocess.Popen | None = None
        self.servers: list[subprocess.Popen] = []

    def cli(self, *args, check=True, timeout=90):
        res = subprocess.run([CLI, *args], capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"[{self.key}] ciliumctl {' '.join(args)} -> {res.returncode}\n{res.stdout}\n"
                                 f"{res.stderr}")
        return res

    def add_pod(self, name: str, app: str) -> str:
        out = self.cli("endpoint", "add", name, "-l", f"app={app}", "-o", "json").stdout
        return json.loads(out)["ipv4"].split("/")[0]

    def connect(self, pod: str, ip: str, port: int, timeout: float = 1.0) -> bool:
        code = (f"import socket, sys\ntry: socket.create_connection(('{ip}', {port}), timeout={timeout}).close()\n"
                "except OSError: sys.exit(1)")
        return self.cli("endpoint", "exec", pod, "--", sys.executable, "-c", code, check=False).returncode == 0

    def serve(self, pod: str, ip: str, port: int) -> None:
        code = ("import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                f"s.bind(('{ip}', {port})); s.listen(16)\nwhile True:\n c,_=s.accept(); c.close()")
        self.servers.append(subprocess.Popen([CLI, "endpoint", "exec", pod, "--", sys.executable, "-c", code],
                                             env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def start_agent(self, kubeconfig: str) -> None:
        self.agent = subprocess.Popen(
            [CLI, "agent", "run", "--kubeconfig", kubeconfig, "--node-name", self.name, "--metrics-listen", ""],
            env=self.env, stdout=self.log.open("w"), stderr=subprocess.STDOUT)

    def agent_log(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def teardown(self) -> None:
        if self.agent and self.agent.poll() is None:
            self.agent.send_signal(signal.SIGTERM)
            try:
                self.agent.wait(10)
            except subprocess.TimeoutExpired:
                self.agent.kill()
        for p in self.servers:
            p.kill()
            p.wait(5)
        subprocess.run([CLI, "uninstall"], env=self.env, capture_output=True, timeout=60)
        for ns in Path("/run/netns").glob(f"{self.name}-*"):
            sh("ip", "netns", "delete", ns.name, check=False)
        sh("ip", "netns", "delete", self.name, check=False)
        shutil.rmtree(self.bpffs, ignore_errors=True)


@pytest.fixture
def nodes(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if not Path(CLI).exists():
        pytest.skip(f"{CLI} missing (run make setup)")
    a, b = SandboxNode("a", tmp_path), SandboxNode("b", tmp_path)
    try:
        for n in (a, b):
            sh("ip", "netns", "add", n.name)
            sh("ip", "-n", n.name, "link", "set", "lo", "up")
        # the wire between the two nodes, and routes to each other's pod pool across it
        sh("ip", "link", "add", f"{a.name}w", "netns", a.name, "type", "veth", "peer", "name", f"{b.name}w",
           "netns", b.name)
        for n, peer in ((a, b), (b, a)):
            sh("ip", "-n", n.name, "addr", "add", f"{WIRE[n.key]}/30", "dev", f"{n.name}w")
            sh("ip", "-n", n.name, "link", "set", f"{n.name}w", "up")
            sh("ip", "-n", n.name, "route", "add", POOLS[peer.key], "via", WIRE[peer.key])
            sh("ip", "netns", "exec", n.name, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        yield a, b
    finally:
        for n in (a, b):
            n.teardown()


def test_two_agents_agree_on_identities_and_enforce_across_nodes(nodes, tmp_path):
    from ciliumctl.cluster import policy_apply
    from ciliumctl.cluster.install import install

    a, b = nodes
    # the API server lives on node a's end of the wire: both agents reach it from inside their own node
    fake = FakeApiServer(host=WIRE["a"], netns=a.name).start()
    try:
        kubeconfig = str(fake.write_kubeconfig(tmp_path / "kubeconfig"))
        in_netns(a.name, lambda: install(kubeconfig=kubeconfig, out=io.StringIO()))

        web_ip = b.add_pod("web", "web")
        client_ip = a.add_pod("client", "client")
        a.add_pod("other", "other")
        store = fake.store
        pods = store.resource_type("", "v1", "pods")
        for node, pod, ip in ((b, "web", web_ip), (a, "client", client_ip), (a, "other", None)):
            store.create(pods, "default", {
                "metadata": {"name": pod, "labels": {"app": pod}},
                "spec": {"nodeName": node.name, "containers": [{"name": "c", "image": "i"}]},
                "status": {"phase": "Running", "podIP": ip or ""}})

        b.serve("web", web_ip, 8080)
        assert wait_for(lambda: a.connect("client", web_ip, 8080), 10), "no path between the nodes"
        assert a.connect("other", web_ip, 8080)

        for n in (a, b):
            n.start_agent(kubeconfig)
        ceps_rt = store.resource_type("cilium.io", "v2", "ciliumendpoints")

        def published():
            items, _ = store.list(ceps_rt)
            return {i["metadata"]["name"]: i["status"] for i in items if i["status"]["identity"]["id"]}
        assert wait_for(lambda: len(published()) == 3, 60), (a.agent_log(), b.agent_log())
        ceps = published()
        assert ceps["web"]["networking"]["node"] == b.name and ceps["client"]["networking"]["node"] == a.name
        # one CiliumIdentity per label set, shared by both nodes
        ids_rt = store.resource_type("cilium.io", "v2", "ciliumidentities")
        identities = {int(i["metadata"]["name"]): i["security-labels"] for i in store.list(ids_rt)[0]}
        assert len(identities) == 3
        for pod in ("web", "client", "other"):
            assert identities[ceps[pod]["identity"]["id"]]["k8s:app"] == pod

        in_netns(a.name, lambda: policy_apply.apply_policies([str(_write(tmp_path / "p.yaml", ALLOW_CLIENT))],
                                                             kubeconfig=kubeconfig))
        # node b enforces web's ingress: the pod on node a that the policy names gets in, the other does not
        assert wait_for(lambda: not a.connect("other", web_ip, 8080, 0.5), 30), b.agent_log()
        assert a.connect("client", web_ip, 8080)
        assert not a.connect("other", web_ip, 8080, 0.5)
        cnp = store.get(store.resource_type("cilium.io", "v2", "ciliumnetworkpolicies"), "default",
                        "web-from-client")
        assert [c["status"] for c in cnp["status"]["conditions"] if c["type"] == "Valid"] == ["True"]
        # deleting the policy through the API opens the path again (the watch drives the datapath)
        in_netns(a.name, lambda: policy_apply.delete_policies(["web-from-client"], kubeconfig=kubeconfig))
        assert wait_for(lambda: a.connect("other", web_ip, 8080, 0.5), 30), b.agent_log()

        # node a enforces other's egress: it must know web (a pod of node b) by the identity node b gave it
        in_netns(a.name, lambda: policy_apply.apply_policies([str(_write(tmp_path / "d.yaml", DENY_OTHER_TO_WEB))],
                                                             kubeconfig=kubeconfig))
        assert wait_for(lambda: not a.connect("other", web_ip, 8080, 0.5), 30), a.agent_log()
        assert a.connect("client", web_ip, 8080)
        for n in (a, b):
            assert n.agent.poll() is None and "Traceback" not in n.agent_log(), n.agent_log()
    finally:
        fake.stop()


DENY_OTHER_TO_WEB = """\
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata:
  name: other-not-to-web
spec:
  endpointSelector:
    matchLabels:
      app: other
  egressDeny:
  - toEndpoints:
    - matchLabels:
        app: web
"""


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
