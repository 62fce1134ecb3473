"""The cluster sync tells this node's flows who the pods of other nodes are: from the CiliumEndpoint and
CiliumIdentity objects of a real API server (the shared one of tests/k8s/conftest.py) to the peers file that
flows.meta reads (tests/flows/test_cluster_peers.py: how flows show them; tests/k8s/test_cluster_e2e.py: in the
real hubble on two real nodes)."""

import os

import pytest
from support.recording import RecordingDatapath
from support.shell import wait_until

from ciliumctl.cluster import endpoints as ceps
from ciliumctl.cluster.identity import CiliumIdentityBackend
from ciliumctl.cluster.kube import Kube
from ciliumctl.endpoints.model import Endpoint
from ciliumctl.flows import meta
from ciliumctl.node import cluster_sync as node_sync
from ciliumctl.policy.labels import endpoint_labels

pytestmark = [pytest.mark.root]


def test_the_sync_writes_other_nodes_pods_and_the_cluster_identities_when_they_change(
        installed, kubeconfig, node_env):
    kube = installed
    identities = CiliumIdentityBackend(Kube.connect(kubeconfig))
    client = Endpoint(id=4, name="client", namespace="default", ipv4="10.2.0.7", node="node-b",
                      labels={"app": "client"})
    labels = endpoint_labels(client, {})
    client.identity = identities.allocate(labels)
    ceps.publish(kube, client, "node-b", labels)         # what node-b's agent did for its pod
    batch = frozenset({"k8s:app=batch", "k8s:io.kubernetes.pod.namespace=default"})
    batch_identity = identities.allocate(batch)          # an identity no pod has (any more)

    agent = node_sync.ClusterNode(kube, "node-a", datapath=RecordingDatapath())
    agent.cache.start()
    try:
        assert agent.cache.wait_synced(5)
        assert wait_until(lambda: len(agent.cache.objects("CiliumEndpoint")) == 1
                          and len(agent.cache.objects("CiliumIdentity")) == 2)
        agent.sync()
        snap = meta.load_snapshot()
        peer = snap.by_ip["10.2.0.7"]
        assert (peer.id, peer.name, peer.namespace, peer.identity) == (0, "client", "default", client.identity)
        assert snap.labels_of(client.identity) == tuple(sorted(labels))
        assert snap.labels_of(batch_identity) == tuple(sorted(batch))

        written = os.stat(meta.peers_path())
        agent.sync()                                      # nothing changed: the file is left alone
        again = os.stat(meta.peers_path())
        assert (again.st_ino, again.st_mtime_ns) == (written.st_ino, written.st_mtime_ns)

        ceps.unpublish(kube, "default", "client")         # the pod went away on node-b
        assert wait_until(lambda: not agent.cache.objects("CiliumEndpoint"))
        agent.sync()
        assert "10.2.0.7" not in meta.load_snapshot().by_ip
    finally:
        agent.cache.stop()
