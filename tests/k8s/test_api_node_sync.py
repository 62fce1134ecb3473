"""The agent's cluster mode on one node: policies, pods and other nodes' endpoints from a real API server (the
shared one of tests/k8s/conftest.py) become the state handed to the datapath (a recorder here: the real datapath
has its own root tests, and tests/k8s/test_cluster_e2e.py runs both on two real nodes)."""

import io

import pytest
import yaml
from support.policies import allow_ingress
from support.recording import RecordingDatapath
from support.shell import wait_until

from ciliumctl.cluster import endpoints as ceps
from ciliumctl.cluster import status_conditions
from ciliumctl.cluster.identity import CiliumIdentityBackend
from ciliumctl.cluster.kube import KINDS
from ciliumctl.endpoints.model import Endpoint
from ciliumctl.node import cluster_sync as node_sync
from ciliumctl.policy.resolved import Direction
from k8s.objects import add_pod, remove_crds

pytestmark = [pytest.mark.root]

ALLOW_CLIENT = yaml.safe_load(allow_ingress("web-from-client", {"app": "web"}, {"app": "client"}, port=80,
                                             namespace="default"))
BROKEN = yaml.safe_load("""
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: broken, namespace: default}
spec:
  endpointSelector: {}
  egress:
  - toCIDR: ["300.1.2.3/32"]
""")


def remote_client(kube, kubeconfig):
    """What node-b's agent would have done for its pod `client`: a cluster identity and a CiliumEndpoint."""
    from ciliumctl.cluster.kube import Kube
    from ciliumctl.policy.labels import endpoint_labels

    client = Endpoint(id=4, name="client", namespace="default", ipv4="10.2.0.7", node="node-b",
                      labels={"app": "client"})
    labels = endpoint_labels(client, {})
    client.identity = CiliumIdentityBackend(Kube.connect(kubeconfig)).allocate(labels)
    ceps.publish(kube, client, "node-b", labels)
    return client


def test_sync_programs_cluster_identities_remote_peers_and_reports_policy_validity(
        installed, kubeconfig, node_env):
    from ciliumctl.endpoints import registry

    kube = installed
    registry.save(Endpoint(id=1, name="web", namespace="default", ipv4="10.1.0.5", host_ifname="lxc1"))
    add_pod(kube, "web", "node-a", "10.1.0.5", {"app": "web"})
    client = remote_client(kube, kubeconfig)
    kube.create(ALLOW_CLIENT)
    kube.create(BROKEN)

    dp = RecordingDatapath()
    agent = node_sync.ClusterNode(kube, "node-a", datapath=dp)
    agent.cache.start()
    try:
        assert agent.cache.wait_synced(5)
        assert wait_until(lambda: len(agent.cache.objects("CiliumEndpoint")) == 1)
        report = agent.sync()
    finally:
        agent.cache.stop()

    assert report.accepted == ["CiliumNetworkPolicy/default/web-from-client"]
    assert "spec.egress[0].toCIDR[0]" in report.rejected["CiliumNetworkPolicy/default/broken"]
    broken = kube.get(KINDS["CiliumNetworkPolicy"], "broken", "default")
    good = kube.get(KINDS["CiliumNetworkPolicy"], "web-from-client", "default")
    assert status_conditions.valid_condition(broken)["status"] == "False"
    assert status_conditions.valid_condition(good)["status"] == "True"

    state = dp.states[-1]
    assert set(state.endpoints) == {1}  # the remote endpoint is a peer, not programmed here
    web = state.endpoints[1]
    assert web.ingress.enforced
    allowed = {(e.identity, e.ports.lo) for e in web.ingress.entries if not e.deny}
    assert allowed == {(client.identity, 80)}
    assert state.ipcache["10.2.0.7/32"] == client.identity
    assert "k8s:app=web" in state.identities[web.identity]

    # the identity is the cluster's and the node's CiliumEndpoint says so
    ids, _ = kube.list(KINDS["CiliumIdentity"])
    assert {int(i["metadata"]["name"]) for i in ids} == {client.identity, web.identity}
    cep = kube.get(KINDS["CiliumEndpoint"], "web", "default")
    assert cep["status"]["identity"]["id"] == web.identity and cep["status"]["networking"]["node"] == "node-a"
    assert registry.load(1).identity == web.identity and registry.load(1).host_ifname == "lxc1"


def test_egress_deny_to_another_nodes_pod_uses_the_identity_that_node_gave_it(installed, kubeconfig, node_env):
    """A clusterwide egress deny on this node names a pod of another node: its entry carries the identity the
    other node published (in the CiliumEndpoint), and the ipcache maps that pod's address to it."""
    from ciliumctl.endpoints import registry

    kube = installed
    registry.save(Endpoint(id=2, name="other", namespace="default", ipv4="10.1.0.6", host_ifname="lxc2"))
    add_pod(kube, "other", "node-a", "10.1.0.6", {"app": "other"})
    remote = remote_client(kube, kubeconfig)       # node-b's pod `client`
    kube.create({"apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
                 "metadata": {"name": "other-not-to-client"},
                 "spec": {"endpointSelector": {"matchLabels": {"app": "other"}},
                          "egressDeny": [{"toEndpoints": [{"matchLabels": {"app": "client"}}]}]}})
    dp = RecordingDatapath()
    agent = node_sync.ClusterNode(kube, "node-a", datapath=dp)
    agent.cache.start()
    try:
        assert agent.cache.wait_synced(5)
        assert wait_until(lambda: len(agent.cache.objects("CiliumEndpoint")) == 1)
        assert agent.sync().accepted == ["CiliumClusterwideNetworkPolicy/other-not-to-client"]
    finally:
        agent.cache.stop()
    state = dp.states[-1]
    denied = {(e.identity, e.deny) for e in state.endpoints[2].egress.entries}
    assert (remote.identity, True) in denied and state.endpoints[2].egress.enforced
    assert state.ipcache["10.2.0.7/32"] == remote.identity


def test_running_agent_follows_changes(installed, kubeconfig, node_env):
    from ciliumctl.endpoints import registry

    kube = installed
    registry.save(Endpoint(id=1, name="web", namespace="default", ipv4="10.1.0.5"))
    add_pod(kube, "web", "node-a", "10.1.0.5", {"app": "web"})
    dp = RecordingDatapath()
    agent = node_sync.ClusterNode(kube, "node-a", datapath=dp, settle_seconds=0.01).start(wait_synced=5)
    try:
        assert wait_until(lambda: agent.syncs >= 1)
        assert not dp.states[-1].endpoints[1].ingress.enforced
        client = remote_client(kube, kubeconfig)
        kube.create(ALLOW_CLIENT)

        def allows_client():
            state = dp.states[-1]
            return any(e.identity == client.identity for e in state.endpoints[1].direction(Direction.INGRESS).entries)
        assert wait_until(allows_client)
        kube.delete(KINDS["CiliumNetworkPolicy"], "web-from-client", "default")
        assert wait_until(lambda: not dp.states[-1].endpoints[1].ingress.enforced)
    finally:
        agent.stop()
    assert agent.last is not None and agent.last.published["unchanged"] + agent.last.published["created"] == 1


def test_local_reconcile_uses_the_cluster_and_gets_published(installed, kubeconfig, node_env):
    """What a CNI ADD does under the node lock in cluster mode: program from the cluster's policies and
    identities (never the local store), then the sync loop publishes the new endpoint."""
    from ciliumctl.endpoints import registry
    from ciliumctl.node import reconcile as node_reconcile
    from ciliumctl.node import settings as node_settings

    kube = installed
    client = remote_client(kube, kubeconfig)
    kube.create(ALLOW_CLIENT)
    dp = RecordingDatapath()
    agent = node_sync.ClusterNode(kube, "node-a", datapath=dp, settle_seconds=0.01).start(wait_synced=5)
    try:
        assert wait_until(lambda: agent.syncs >= 1)
        add_pod(kube, "web", "node-a", "10.1.0.5", {"app": "web"})
        assert wait_until(lambda: agent.cache.get("Pod", "web", "default") is not None)
        with node_settings.locked():
            registry.save(Endpoint(id=3, name="web", namespace="default", ipv4="10.1.0.5"))
            node_reconcile.reconcile(dp)  # the node's own entry point, handed to the cluster while the agent runs
        state = dp.states[-1]
        assert node_reconcile.allocator() is agent.identities
        assert {e.identity for e in state.endpoints[3].ingress.entries} == {client.identity}
        assert wait_until(lambda: kube.get(KINDS["CiliumEndpoint"], "web", "default") is not None)
        assert kube.get(KINDS["CiliumEndpoint"], "web", "default")["status"]["identity"]["id"] == \
            state.endpoints[3].identity
    finally:
        agent.stop()
    assert node_reconcile.allocator() is not agent.identities  # node mode again once the agent stops


def test_never_programs_from_a_partial_view(installed, node_env):
    """Before the policy CRDs can be listed the agent keeps the datapath as it is (no empty policy set
    loaded) and refuses node-local reconciles; once everything is listed it programs."""

    from ciliumctl.base.errors import EnvironmentProblem
    from ciliumctl.cluster.install import install

    kube = installed
    remove_crds(kube, "CiliumNetworkPolicy")
    dp = RecordingDatapath()
    agent = node_sync.ClusterNode(kube, "node-a", datapath=dp, settle_seconds=0.01)
    agent.cache.backoff = (0.05, 0.2)
    agent.start(wait_synced=0.3)
    try:
        import time

        time.sleep(0.5)
        assert dp.states == [] and not agent.cache.synced()
        with pytest.raises(EnvironmentProblem, match="has not read the cluster's policies"):
            agent.reconcile_locked(dp)
        install(kube=kube, out=io.StringIO())
        assert wait_until(lambda: len(dp.states) >= 1)
    finally:
        agent.stop()


def test_start_for_agent_picks_the_mode(installed, kubeconfig, node_env, monkeypatch):
    from ciliumctl.base.errors import EnvironmentProblem

    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("CILIUMCTL_CLUSTER", raising=False)
    assert node_sync.start_for_agent() is None  # node mode
    monkeypatch.setenv("CILIUMCTL_CLUSTER", "in-cluster")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(EnvironmentProblem, match="in-cluster Kubernetes config"):
        node_sync.start_for_agent()
    monkeypatch.setenv("CILIUMCTL_ENFORCEMENT", "always")
    monkeypatch.setenv("CILIUMCTL_AUDIT", "true")
    dp = RecordingDatapath()
    agent = node_sync.start_for_agent(kubeconfig, node_name="node-a", datapath=dp)
    try:
        assert agent.node_name == "node-a" and agent.mode == "always" and agent.audit is True
        assert agent.cache.synced()
        assert wait_until(lambda: len(dp.states) >= 1)
    finally:
        agent.stop()
