"""Cluster mode's NodePort to a pod on another node, with real packets: a Service and its EndpointSlice on the real
API server (the shared one of tests/k8s/conftest.py; no controllers there, so the slice is made by hand) go through
the agent's cluster sync (node.cluster_sync, watches and all) into the real datapath of a sandbox node, and a client
outside reaches the pod on the other node through the node's NodePort, no kube-proxy anywhere. The nodes, pods
and client are namespaces (tests/support/two_nodes.py)."""

import os

import pytest
from support.shell import wait_until
from support.two_nodes import CLIENT_IP, NODE_IP, NODE_IP_TO_B, REMOTE_POD, ask, build_two_nodes, peer_server

from ciliumctl.cluster.kube import KINDS
from ciliumctl.node import cluster_sync as node_sync

pytestmark = [pytest.mark.root]


@pytest.fixture
def api_in_node(sandbox, api_shared):
    """The API server at its own address inside the sandbox node too: the agent's code runs in the node's network
    namespace (as the real agent does), whose 127.0.0.1 is not the machine's. A forwarder listens there and
    connects from the namespace this test started in (what tests/k8s/cluster.py does for its nodes)."""
    import socket

    from support.netns import in_netns

    from ciliumctl.base import netns as nodens
    from k8s.cluster import Forwarder

    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    with in_netns(sandbox.node):
        listener = socket.socket()
        listener.bind(("127.0.0.1", api_shared.api_port))
        listener.listen(64)

    def to_api(_conn):
        with nodens.in_netns(home):
            return socket.create_connection(("127.0.0.1", api_shared.api_port), timeout=10)

    forwarder = Forwarder(listener, to_api)
    yield
    forwarder.close()
    os.close(home)


@pytest.fixture
def datapath(sandbox, api_in_node):
    from ciliumctl.datapath.loader import Datapath

    dp = Datapath.open()
    for pod in sandbox.pods:
        dp.attach(pod.ep)
    yield dp
    dp.close()


def test_a_node_port_service_reaches_a_pod_on_the_other_node(installed, new_namespace, sandbox, datapath):
    kube = installed
    ns = new_namespace("np")
    me = f"np-node-{os.urandom(3).hex()}"
    local_pod = sandbox.pods[1]
    nodes = build_two_nodes(sandbox, datapath)
    peer_server(sandbox, nodes.remote, 8080)
    peer_server(sandbox, local_pod, 8080)
    made = []

    def create(obj):
        out = kube.create(obj)
        made.append((obj["kind"], obj["metadata"]["name"], obj["metadata"].get("namespace")))
        return out

    try:
        node = create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": me}})
        node["status"] = {"addresses": [{"type": "InternalIP", "address": NODE_IP}]}
        kube.replace(node, sub="status")
        web = create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": ns},
                      "spec": {"type": "NodePort", "selector": {"app": "web"},
                               "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}]}})
        create({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                "metadata": {"name": "web-1", "namespace": ns, "labels": {"kubernetes.io/service-name": "web"}},
                "endpoints": [{"addresses": [REMOTE_POD], "nodeName": "the-other-node"}],
                "ports": [{"name": "", "port": 8080, "protocol": "TCP"}]})
        node_port = web["spec"]["ports"][0]["nodePort"]

        agent = node_sync.ClusterNode(kube, me, datapath=datapath)
        agent.cache.start()
        try:
            assert agent.cache.wait_synced(5)
            assert wait_until(lambda: any(s["metadata"]["namespace"] == ns
                                          for s in agent.cache.objects("EndpointSlice")))
            agent.sync()
            # externalTrafficPolicy Cluster (the default): the other node's pod, SNATed to this node's address
            assert ask(nodes.client, NODE_IP, node_port) == (REMOTE_POD, NODE_IP_TO_B, (NODE_IP, node_port))

            # Local: this node's pods only, the client's address kept
            web = kube.get(KINDS["Service"], "web", ns)
            web["spec"]["externalTrafficPolicy"] = "Local"
            kube.replace(web)
            sl = kube.get(KINDS["EndpointSlice"], "web-1", ns)
            sl["endpoints"].append({"addresses": [local_pod.ip], "nodeName": me})
            kube.replace(sl)
            assert wait_until(lambda: any(
                s["metadata"]["namespace"] == ns and len(s["endpoints"]) == 2
                for s in agent.cache.objects("EndpointSlice")) and any(
                s["metadata"]["namespace"] == ns and s["spec"].get("externalTrafficPolicy") == "Local"
                for s in agent.cache.objects("Service")))
            agent.sync()
            assert {ask(nodes.client, NODE_IP, node_port)[:2] for _ in range(10)} == {(local_pod.ip, CLIENT_IP)}
        finally:
            agent.cache.stop()
    finally:
        for kind, name, namespace in reversed(made):   # no namespace controller here: delete them ourselves
            kube.delete(KINDS[kind], name, namespace)
