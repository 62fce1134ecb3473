"""NodePort to backends on other nodes, through the real BPF programs (lib/nodeport.h), as Cilium's kube-proxy
replacement does it by default (SNAT mode): a client outside reaches node A's NodePort, the backend on node B sees
node A's address (the connection is SNATed there) and answers node A, which gives the reply back to the client
from the frontend. externalTrafficPolicy Local uses this node's backends only and keeps the client's address.

The nodes, their pods and the client are namespaces (tests/support/two_nodes.py)."""

from __future__ import annotations

import dataclasses
import socket
import time

import pytest
from support.two_nodes import CLIENT_IP, NODE_IP, NODE_IP_TO_B, REMOTE_POD, ask, build_two_nodes, peer_server

from ciliumctl.datapath import events as ev
from ciliumctl.services.model import Backend, Frontend, Service, ServiceTable

pytestmark = pytest.mark.root

CIDR = "10.96.0.0/12"
OBS_TO_NETWORK = 11      # Cilium's TRACE_TO_NETWORK (bpf/lib/trace.h)


@pytest.fixture
def two_nodes(sandbox, datapath):
    return build_two_nodes(sandbox, datapath)


def _apply(sandbox, datapath, table, revision=1):
    datapath.apply(dataclasses.replace(sandbox.state(revision, {}), services=table))


def _nodeport(*backends, port=30080, proto="tcp"):
    return ServiceTable().update(Service(0, Frontend(NODE_IP, port, proto), "NodePort", backends), CIDR,
                                 frozenset({NODE_IP}))


def test_nodeport_reaches_a_backend_on_another_node_snated_to_the_nodes_address(sandbox, datapath, two_nodes,
                                                                                 events):
    peer_server(sandbox, two_nodes.remote, 8080)
    _apply(sandbox, datapath, _nodeport(Backend(REMOTE_POD, 8080)))
    events.drain()
    for _ in range(3):
        # the backend answers node A's address towards it; the client sees only the frontend
        assert ask(two_nodes.client, NODE_IP, 30080) == (REMOTE_POD, NODE_IP_TO_B, (NODE_IP, 30080))
    # every packet of one connection goes the same way, both directions
    s = two_nodes.client.socket()
    s.settimeout(2)
    s.connect((NODE_IP, 30080))
    s.recv(32)
    for i in range(20):
        s.sendall(b"x%02d" % i)
        assert s.recv(16) == b"x%02d" % i
    s.close()
    # the pod on node B is not reachable from outside by itself: only the NodePort leads there
    with pytest.raises(OSError):
        ask(two_nodes.client, REMOTE_POD, 8080, timeout=0.5)
    time.sleep(0.1)
    traces = [e for e in events.events() if e.type == ev.EVENT_TRACE and e.subtype == OBS_TO_NETWORK]
    # flows show the translation: client -> backend with the service named, and the reply backend -> client
    out = [e for e in traces if not e.is_reply]
    back = [e for e in traces if e.is_reply]
    assert out and all((e.saddr, e.daddr, e.dport, e.svc_id) == (CLIENT_IP, REMOTE_POD, 8080, 1) for e in out)
    assert back and all((e.saddr, e.sport, e.daddr) == (REMOTE_POD, 8080, CLIENT_IP) for e in back)


def test_udp_nodeport_to_another_node(sandbox, datapath, two_nodes):
    sandbox.udp_server(two_nodes.remote, 5353)
    _apply(sandbox, datapath, _nodeport(Backend(REMOTE_POD, 5353), port=30053, proto="udp"))
    s = two_nodes.client.socket(socket.SOCK_DGRAM)
    s.settimeout(2)
    for i in range(3):
        s.sendto(b"hello%d" % i, (NODE_IP, 30053))
        assert s.recvfrom(64) == (b"hello%d" % i, (NODE_IP, 30053))
    s.close()


def test_local_backends_keep_the_clients_address_remote_ones_see_the_node(sandbox, datapath, two_nodes):
    a, b, _ = sandbox.pods
    peer_server(sandbox, b, 8080)
    peer_server(sandbox, two_nodes.remote, 8080)
    _apply(sandbox, datapath, _nodeport(Backend(b.ip, 8080), Backend(REMOTE_POD, 8080)))
    seen = {ask(two_nodes.client, NODE_IP, 30080)[:2] for _ in range(30)}
    assert seen == {(b.ip, CLIENT_IP), (REMOTE_POD, NODE_IP_TO_B)}


def _cluster_table(policy: str, endpoints: list[tuple[str, str]]) -> ServiceTable:
    """The table cluster mode builds (cluster.services) for one NodePort Service with these (address, node)
    endpoints, this node being node-a."""
    from ciliumctl.cluster.services import build

    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
           "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "type": "NodePort",
                    "externalTrafficPolicy": policy,
                    "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 30080}]}}
    eps = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
           "metadata": {"name": "web-x", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
           "endpoints": [{"addresses": [ip], "nodeName": node, "conditions": {"ready": True}}
                         for ip, node in endpoints],
           "ports": [{"name": "", "port": 8080, "protocol": "TCP"}]}
    return build([svc], [eps], "node-a", frozenset({NODE_IP}), (CIDR,)).table


def test_cluster_mode_external_traffic_policies(sandbox, datapath, two_nodes, events):
    a, b, _ = sandbox.pods
    peer_server(sandbox, b, 8080)
    peer_server(sandbox, two_nodes.remote, 8080)
    both = [(b.ip, "node-a"), (REMOTE_POD, "node-b")]
    # Cluster: a Service's EndpointSlice with a pod on the other node reaches it, SNATed
    _apply(sandbox, datapath, _cluster_table("Cluster", both))
    seen = {ask(two_nodes.client, NODE_IP, 30080)[:2] for _ in range(30)}
    assert seen == {(b.ip, CLIENT_IP), (REMOTE_POD, NODE_IP_TO_B)}
    # Local: this node's backends only, the client's own address kept (never SNATed)
    _apply(sandbox, datapath, _cluster_table("Local", both), 2)
    assert {ask(two_nodes.client, NODE_IP, 30080)[:2] for _ in range(20)} == {(b.ip, CLIENT_IP)}
    # Local on a node without a backend of its own: refused at once, Cilium's 158 (no service backend)
    _apply(sandbox, datapath, _cluster_table("Local", [(REMOTE_POD, "node-b")]), 3)
    events.drain()
    with pytest.raises(ConnectionRefusedError):
        ask(two_nodes.client, NODE_IP, 30080, timeout=5)
    time.sleep(0.1)
    drops = [e for e in events.events() if e.type == ev.EVENT_DROP]
    assert drops and {(e.subtype, e.saddr, e.dport) for e in drops} == {(158, CLIENT_IP, 30080)}


def test_node_mode_service_update_with_a_backend_on_another_node(sandbox, datapath, two_nodes):
    """`service update --type NodePort --backends` naming the other node's pod: accepted (node A has a route to its
    pod CIDR) and reached through node A."""
    from ciliumctl.node.services import ops as service_ops

    peer_server(sandbox, two_nodes.remote, 8080)
    service_ops.update_service(Service(0, Frontend(NODE_IP, 30080), "NodePort", (Backend(REMOTE_POD, 8080),)))
    assert ask(two_nodes.client, NODE_IP, 30080) == (REMOTE_POD, NODE_IP_TO_B, (NODE_IP, 30080))


def test_the_host_firewall_leaves_nodeport_to_another_node_alone(sandbox, datapath, two_nodes):
    """With the host firewall on (the devices are the host endpoint's, its ingress and egress enforced with nothing
    allowed), the node's own ports are closed to the client, yet NodePort connections to the other node and their
    replies pass: they are translated and decided by the NodePort path, not the host's."""
    from support.pods import Pod

    from ciliumctl.datapath import maps
    from ciliumctl.endpoints.model import Endpoint
    from ciliumctl.policy.resolved import DirectionPolicy, EndpointPolicy

    peer_server(sandbox, two_nodes.remote, 8080)
    peer_server(sandbox, Pod(Endpoint(id=0, name="node", ipv4=NODE_IP), sandbox.node), 9090)   # the node's own
    assert ask(two_nodes.client, NODE_IP, 9090)[0] == NODE_IP
    for dev in (f"{sandbox.prefix}d", f"{sandbox.prefix}e"):
        idx = socket.if_nametoindex(dev)    # this thread is in the node namespace (the datapath entered it)
        datapath.maps["endpoints"].update(idx.to_bytes(4, "little"), maps.EP_INFO.pack(0, 0, 1))
    state = sandbox.state(1, {}, ipcache={**sandbox.ipcache(), f"{NODE_IP}/32": 1, f"{NODE_IP_TO_B}/32": 1})
    state.endpoints[0] = EndpointPolicy(0, 1, DirectionPolicy(True, []), DirectionPolicy(True, []))
    datapath.apply(dataclasses.replace(state, services=_nodeport(Backend(REMOTE_POD, 8080))))
    with pytest.raises(OSError):
        ask(two_nodes.client, NODE_IP, 9090, timeout=0.5)
    assert ask(two_nodes.client, NODE_IP, 30080) == (REMOTE_POD, NODE_IP_TO_B, (NODE_IP, 30080))


def test_a_direct_connection_on_the_tuple_of_an_earlier_nodeport_one(sandbox, datapath, two_nodes):
    """The client's next connection from the same port goes straight to the backend's address: its replies come
    from the backend, not from the frontend the earlier NodePort connection left in conntrack."""
    from support.shell import sh

    _, b, _ = sandbox.pods
    peer_server(sandbox, b, 8080)
    peer_server(sandbox, two_nodes.remote, 8080)
    p = sandbox.prefix
    for net in ("10.11.0.0/16", "10.12.0.0/24"):     # the client routes the pod CIDRs through node A
        sh("ip", "-n", f"{p}x", "route", "add", net, "via", NODE_IP)
    sh("ip", "-n", f"{p}m", "route", "add", "192.168.77.0/24", "via", NODE_IP_TO_B)
    for revision, (backend, seen) in enumerate(((b.ip, CLIENT_IP), (REMOTE_POD, NODE_IP_TO_B)), 1):
        _apply(sandbox, datapath, _nodeport(Backend(backend, 8080)), revision)
        assert ask(two_nodes.client, NODE_IP, 30080, sport=40000 + revision) == (backend, seen, (NODE_IP, 30080))
        assert ask(two_nodes.client, backend, 8080, sport=40000 + revision) == (backend, CLIENT_IP, (backend, 8080))
