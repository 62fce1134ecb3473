"""The host firewall in cluster mode (issue 13): this node's Node object gives the labels nodeSelector rules match
(a label change re-resolves the host endpoint), the other Node objects' addresses are remote-node (6), and with
the host firewall on a nodeSelector policy has no "not enforced" condition. On the real API server (the shared
one of tests/k8s/conftest.py); the state goes to a recording datapath (the kernel side has its own tests)."""

import os

import pytest
from support.recording import RecordingDatapath
from support.shell import wait_until

from ciliumctl.cluster import status_conditions
from ciliumctl.cluster.kube import KINDS
from ciliumctl.identity import allocator as ids
from ciliumctl.node import cluster_sync as node_sync
from ciliumctl.policy.resolve import HOST_ENDPOINT_ID

pytestmark = [pytest.mark.root]

CCNP = KINDS["CiliumClusterwideNetworkPolicy"]
KUBELET_FROM_NODES = {
    "apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
    "metadata": {"name": "kubelet-from-nodes"},
    "spec": {"nodeSelector": {"matchLabels": {"hostfw-test/role": "worker"}},
             "ingress": [{"fromEntities": ["remote-node"],
                          "toPorts": [{"ports": [{"port": "10250", "protocol": "TCP"}]}]}]}}
TO_APISERVER = {
    "apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
    "metadata": {"name": "host-to-apiserver"},
    "spec": {"nodeSelector": {"matchLabels": {"hostfw-test/role": "worker"}},
             "egress": [{"toEntities": ["kube-apiserver"]}]}}


@pytest.fixture
def nodes(installed):
    """node(name, labels, internal_ip) makes a Node object with that address in its status; all are deleted after."""
    made = []

    def make(prefix: str, labels: dict, ip: str) -> str:
        name = f"{prefix}-{os.urandom(3).hex()}"
        obj = installed.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}})
        made.append(name)
        obj["status"] = {"addresses": [{"type": "InternalIP", "address": ip},
                                       {"type": "Hostname", "address": name}]}
        installed.replace(obj, sub="status")
        return name
    yield make
    for name in made:
        installed.delete(KINDS["Node"], name)


def host_firewall_on(on: bool = True) -> None:
    from ciliumctl.node import settings as node_settings

    s = node_settings.load_settings()
    s.host_firewall = on
    node_settings.save_settings(s)


def remote_node_ports(state) -> set[int]:
    host = state.endpoints.get(HOST_ENDPOINT_ID)
    if host is None or not host.ingress.enforced:
        return set()
    return {e.ports.lo for e in host.ingress.entries if e.identity == ids.REMOTE_NODE and not e.deny}


def test_node_labels_select_host_policies_and_other_nodes_are_remote_node(installed, nodes, node_env):
    kube = installed
    host_firewall_on()
    me = nodes("hostfw-me", {"hostfw-test/role": "worker"}, "192.0.2.10")
    other = nodes("hostfw-other", {"hostfw-test/role": "worker"}, "192.0.2.11")
    kube.create(KUBELET_FROM_NODES)
    kube.create(TO_APISERVER)
    # the `kubernetes` Service's slice, as the controller-manager's mirroring makes it (this API server runs without
    # one): where the agent finds the API server's addresses
    api_slice = kube.create({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                             "metadata": {"name": f"kubernetes-{me}", "namespace": "default",
                                          "labels": {"kubernetes.io/service-name": "kubernetes"}},
                             "endpoints": [{"addresses": ["192.0.2.50"]}],
                             "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]})
    dp = RecordingDatapath()
    agent = node_sync.ClusterNode(kube, me, datapath=dp, settle_seconds=0.01).start(wait_synced=5)
    try:
        assert wait_until(lambda: dp.states and remote_node_ports(dp.states[-1]) == {10250})
        state = dp.states[-1]
        assert state.ipcache["192.0.2.11/32"] == ids.REMOTE_NODE       # the other node
        assert "192.0.2.10/32" not in state.ipcache or state.ipcache["192.0.2.10/32"] != ids.REMOTE_NODE
        assert wait_until(lambda: agent.last is not None)
        assert agent.last is not None and "CiliumClusterwideNetworkPolicy/kubelet-from-nodes" in agent.last.accepted
        assert "CiliumClusterwideNetworkPolicy/kubelet-from-nodes" not in agent.last.partially_enforced
        cond = status_conditions.enforced_condition(kube.get(CCNP, "kubelet-from-nodes"))
        assert cond is not None and cond["status"] == "True"

        # the API server: the `kubernetes` Service's endpoint is kube-apiserver (7)
        assert state.ipcache["192.0.2.50/32"] == ids.KUBE_APISERVER
        host = state.endpoints[HOST_ENDPOINT_ID]
        assert host.egress.enforced and {e.identity for e in host.egress.entries} == {ids.KUBE_APISERVER}
        assert "CiliumClusterwideNetworkPolicy/host-to-apiserver" not in agent.last.partially_enforced

        # the node's label changes: the policy no longer selects it, the host endpoint enforces nothing
        obj = kube.get(KINDS["Node"], me)
        obj["metadata"]["labels"] = {"hostfw-test/role": "gateway"}
        kube.replace(obj)
        assert wait_until(lambda: remote_node_ports(dp.states[-1]) == set())
        # ... and back
        obj = kube.get(KINDS["Node"], me)
        obj["metadata"]["labels"] = {"hostfw-test/role": "worker"}
        kube.replace(obj)
        assert wait_until(lambda: remote_node_ports(dp.states[-1]) == {10250})

        # a node that goes away is no longer remote-node
        kube.delete(KINDS["Node"], other)
        assert wait_until(lambda: "192.0.2.11/32" not in dp.states[-1].ipcache)
    finally:
        agent.stop()
        kube.delete(KINDS["EndpointSlice"], api_slice["metadata"]["name"], "default")


def test_with_the_host_firewall_off_the_host_policy_is_reported_not_enforced(installed, nodes, node_env):
    kube = installed
    host_firewall_on(False)
    me = nodes("hostfw-off", {"hostfw-test/role": "worker"}, "192.0.2.20")
    kube.create(KUBELET_FROM_NODES)
    dp = RecordingDatapath()
    agent = node_sync.ClusterNode(kube, me, datapath=dp)
    agent.cache.start()
    try:
        assert agent.cache.wait_synced(5)
        report = agent.sync()
    finally:
        agent.cache.stop()
    assert HOST_ENDPOINT_ID not in dp.states[-1].endpoints
    assert "host firewall is off" in " ".join(report.partially_enforced["CiliumClusterwideNetworkPolicy/"
                                                                        "kubelet-from-nodes"])
    cond = status_conditions.enforced_condition(kube.get(CCNP, "kubelet-from-nodes"))
    assert cond is not None and cond["status"] == "False"


def test_with_node_selector_labels_from_nodes_selects_other_nodes_by_their_labels(installed, nodes, node_env):
    """--enable-node-selector-labels: every other node's address has an identity of its Node's labels (Cilium's
    per-node identities), so fromNodes picks the control-plane node and not the edge node; no gap is left."""
    from ciliumctl.node import settings as node_settings
    from ciliumctl.policy.resolve import REMOTE_NODE_SCOPE

    kube = installed
    s = node_settings.load_settings()
    s.host_firewall, s.node_selector_labels = True, True
    node_settings.save_settings(s)
    me = nodes("hostfw-sel", {"hostfw-test/role": "worker"}, "192.0.2.30")
    nodes("hostfw-cp", {"hostfw-test/tier": "control"}, "192.0.2.31")
    nodes("hostfw-edge", {"hostfw-test/tier": "edge"}, "192.0.2.32")
    kube.create({"apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
                 "metadata": {"name": "ssh-from-control-plane"},
                 "spec": {"nodeSelector": {"matchLabels": {"hostfw-test/role": "worker"}},
                          "ingress": [{"fromNodes": [{"matchLabels": {"hostfw-test/tier": "control"}}],
                                       "toPorts": [{"ports": [{"port": "22", "protocol": "TCP"}]}]}]}})
    dp = RecordingDatapath()
    agent = node_sync.ClusterNode(kube, me, datapath=dp)
    agent.cache.start()
    try:
        assert agent.cache.wait_synced(5)
        assert wait_until(lambda: len([n for n in agent.cache.objects("Node")
                                       if n["metadata"]["name"].startswith("hostfw-")]) >= 3)
        report = agent.sync()
    finally:
        agent.cache.stop()
    state = dp.states[-1]
    control, edge = state.ipcache["192.0.2.31/32"], state.ipcache["192.0.2.32/32"]
    assert control != edge and all(REMOTE_NODE_SCOPE < i < 2 * REMOTE_NODE_SCOPE for i in (control, edge))
    assert {"reserved:remote-node", "node:hostfw-test/tier=control"} <= state.identities[control]
    allowed = {(e.identity, e.ports.lo) for e in state.endpoints[HOST_ENDPOINT_ID].ingress.entries if not e.deny}
    assert allowed == {(control, 22)}
    assert report.accepted == ["CiliumClusterwideNetworkPolicy/ssh-from-control-plane"]
    assert "CiliumClusterwideNetworkPolicy/ssh-from-control-plane" not in report.partially_enforced


def test_the_agent_holds_back_a_host_policy_that_would_cut_a_live_connection(installed, nodes, node_env):
    """Cluster mode's lock-out guard: a kubectl-applied host policy that would cut a live connection of the node (a
    real TCP connection from the namespace playing the world to one playing the node, judged from that namespace's
    socket table) is not enforced by the agent; it says so on the policy (its own HostPolicyHeldBack/<node>
    condition, naming the connection and the annotation that forces it) and in an Event. Once the connection has
    ended the agent enforces it and the condition goes; annotated, it is enforced despite a live connection."""
    import yaml
    from support.hostfw import NODE_IP, SEED, WORLD_NET, HeldConnection, NodeNamespace, listen, ready, uplinks

    from ciliumctl.cluster import install
    from ciliumctl.node.hostfw import lockout

    kube = installed
    host_firewall_on()
    with NodeNamespace() as node:
        world, _remote, _devs = uplinks(node)
        listener = listen(node, 22)
        ready(node, 22)
        held = HeldConnection(node, world, NODE_IP, 22)
        me = nodes("hostfw-guard", {"node-role.kubernetes.io/worker": ""}, NODE_IP)   # its address: host
        seed = yaml.safe_load(SEED)           # lets only metrics-server (10250) and remote-node (22) in
        kube.create(seed)
        dp = RecordingDatapath()
        agent = node_sync.ClusterNode(kube, me, datapath=dp, connections=node.table_reader(listener.pid))
        agent.cache.start()
        try:
            assert agent.cache.wait_synced(5)
            report = agent.sync()
            ref = "CiliumClusterwideNetworkPolicy/kubelet-from-metrics-server"
            cut = f"{WORLD_NET}.2:{held.port} -> {NODE_IP}:22/tcp (from world)"
            assert report.held_back == {ref: [cut]} and ref not in report.accepted
            assert not dp.states[-1].endpoints[HOST_ENDPOINT_ID].ingress.enforced      # nothing of it enforced
            obj = kube.get(CCNP, "kubelet-from-metrics-server")
            cond = status_conditions.condition(obj, f"HostPolicyHeldBack/{me}")
            assert cond is not None and cond["status"] == "True" and cond["reason"] == "WouldCutLiveConnections"
            assert cut in cond["message"] and f"{lockout.FORCE_ANNOTATION}=true" in cond["message"]
            assert status_conditions.enforced_condition(obj)["status"] == "True"   # the cluster-wide verdict stays
            events = [e for e in kube.list(KINDS["Event"], "default")[0]
                      if e["involvedObject"]["name"] == "kubelet-from-metrics-server"]
            assert [e["reason"] for e in events] == ["HostPolicyHeldBack"] and cut in events[0]["message"]
            assert install.status(kube=kube).held_back == [f"{ref} on {me}"]     # `ciliumctl status` names it
            assert held.alive()

            def connected_to_22() -> bool:
                return any(c.lport == 22 for c in node.table_reader(listener.pid)())

            # the connection ends: judged again at the next sync, the policy is enforced and the condition goes
            held.proc.kill()
            held.proc.wait()
            assert wait_until(lambda: not connected_to_22())
            report = agent.sync()
            assert report.held_back == {} and ref in report.accepted
            assert dp.states[-1].endpoints[HOST_ENDPOINT_ID].ingress.enforced
            assert status_conditions.condition(kube.get(CCNP, "kubelet-from-metrics-server"),
                                               f"HostPolicyHeldBack/{me}") is None

            # a new connection it would cut: held back again, though in force (its next packet would be dropped)
            held = HeldConnection(node, world, NODE_IP, 22)
            assert agent.sync().held_back == {ref: [f"{WORLD_NET}.2:{held.port} -> {NODE_IP}:22/tcp (from world)"]}
            obj = kube.get(CCNP, "kubelet-from-metrics-server")
            assert status_conditions.condition(obj, f"HostPolicyHeldBack/{me}") is not None

            # forced: the annotation lets it through, the node's condition is removed
            obj["metadata"].setdefault("annotations", {})[lockout.FORCE_ANNOTATION] = "true"
            kube.replace(obj)
            assert wait_until(lambda: lockout.forced(agent.cache.get(CCNP.kind, "kubelet-from-metrics-server") or {}))
            report = agent.sync()
            assert report.held_back == {} and ref in report.accepted
            assert dp.states[-1].endpoints[HOST_ENDPOINT_ID].ingress.enforced
            obj = kube.get(CCNP, "kubelet-from-metrics-server")
            assert status_conditions.condition(obj, f"HostPolicyHeldBack/{me}") is None
            assert install.status(kube=kube).held_back == []
        finally:
            agent.cache.stop()
            for e in kube.list(KINDS["Event"], "default")[0]:
                if e["involvedObject"]["name"] == "kubelet-from-metrics-server":
                    kube.delete(KINDS["Event"], e["metadata"]["name"], "default")
