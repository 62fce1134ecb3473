"""Two agents on one machine: two sandbox nodes (each a network namespace with its own pods behind it, joined by
a veth "wire"), one fake API server. They agree on identities through CiliumIdentity objects and enforce a policy
between pods on different nodes, with real packets through the real datapath."""

from __future__ import annotations

import contextlib
import io

import pytest
from fakeapi import FakeApiServer, in_netns
from support.cli import require_cli
from support.netns import require_root
from support.node import SandboxNode
from support.policies import allow_ingress
from support.shell import sh, wait_until, write

pytestmark = [pytest.mark.root, pytest.mark.slow]

WIRE = {"a": "10.231.0.1", "b": "10.231.0.2"}
POOLS = {"a": "10.210.1.0/24", "b": "10.210.2.0/24"}

ALLOW_CLIENT = allow_ingress("web-from-client", {"app": "web"}, {"app": "client"}, port=8080)


@pytest.fixture
def nodes(tmp_path):
    require_root()
    require_cli()
    with contextlib.ExitStack() as stack:
        a, b = (stack.enter_context(SandboxNode(tmp_path / key, CILIUMCTL_POOL=POOLS[key])) for key in "ab")
        for n in (a, b):
            sh("ip", "-n", n.name, "link", "set", "lo", "up")
        # the wire between the two nodes, and routes to each other's pod pool across it
        sh("ip", "link", "add", f"{a.name}w", "netns", a.name, "type", "veth", "peer", "name", f"{b.name}w",
           "netns", b.name)
        for n, key, peer in ((a, "a", "b"), (b, "b", "a")):
            sh("ip", "-n", n.name, "addr", "add", f"{WIRE[key]}/30", "dev", f"{n.name}w")
            sh("ip", "-n", n.name, "link", "set", f"{n.name}w", "up")
            sh("ip", "-n", n.name, "route", "add", POOLS[peer], "via", WIRE[peer])
            sh("ip", "netns", "exec", n.name, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        yield a, b


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
        assert wait_until(lambda: a.connect("client", web_ip, 8080), 10), "no path between the nodes"
        assert a.connect("other", web_ip, 8080)

        for n in (a, b):
            n.start_agent(kubeconfig)
        ceps_rt = store.resource_type("cilium.io", "v2", "ciliumendpoints")

        def published():
            items, _ = store.list(ceps_rt)
            return {i["metadata"]["name"]: i["status"] for i in items if i["status"]["identity"]["id"]}
        assert wait_until(lambda: len(published()) == 3, 60), (a.agent_log(), b.agent_log())
        ceps = published()
        assert ceps["web"]["networking"]["node"] == b.name and ceps["client"]["networking"]["node"] == a.name
        # one CiliumIdentity per label set, shared by both nodes
        ids_rt = store.resource_type("cilium.io", "v2", "ciliumidentities")
        identities = {int(i["metadata"]["name"]): i["security-labels"] for i in store.list(ids_rt)[0]}
        assert len(identities) == 3
        for pod in ("web", "client", "other"):
            assert identities[ceps[pod]["identity"]["id"]]["k8s:app"] == pod

        in_netns(a.name, lambda: policy_apply.apply_policies([str(write(tmp_path / "p.yaml", ALLOW_CLIENT))],
                                                             kubeconfig=kubeconfig))
        # node b enforces web's ingress: the pod on node a that the policy names gets in, the other does not
        assert wait_until(lambda: not a.connect("other", web_ip, 8080, 0.5), 30), b.agent_log()
        assert a.connect("client", web_ip, 8080)
        assert not a.connect("other", web_ip, 8080, 0.5)
        cnp = store.get(store.resource_type("cilium.io", "v2", "ciliumnetworkpolicies"), "default",
                        "web-from-client")
        assert [c["status"] for c in cnp["status"]["conditions"] if c["type"] == "Valid"] == ["True"]
        # deleting the policy through the API opens the path again (the watch drives the datapath)
        in_netns(a.name, lambda: policy_apply.delete_policies(["web-from-client"], kubeconfig=kubeconfig))
        assert wait_until(lambda: a.connect("other", web_ip, 8080, 0.5), 30), b.agent_log()

        # node a enforces other's egress: it must know web (a pod of node b) by the identity node b gave it
        in_netns(a.name, lambda: policy_apply.apply_policies([str(write(tmp_path / "d.yaml", DENY_OTHER_TO_WEB))],
                                                             kubeconfig=kubeconfig))
        assert wait_until(lambda: not a.connect("other", web_ip, 8080, 0.5), 30), a.agent_log()
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
