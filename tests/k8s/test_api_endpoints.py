"""CiliumEndpoint publishing and `endpoint list --all-nodes` rows; pods and namespaces as agent inputs: on a real
API server (the shared one of tests/k8s/conftest.py)."""

import pytest
from support.shell import wait_until

from ciliumctl.cluster import endpoints as ceps
from ciliumctl.cluster import sources
from ciliumctl.cluster.kube import KINDS
from ciliumctl.cluster.watch import ClusterCache
from ciliumctl.endpoints.model import Endpoint
from k8s.objects import add_pod

pytestmark = [pytest.mark.root]


def ep(name, ident, ip, ns="default", id_=1):
    return Endpoint(id=id_, name=name, namespace=ns, ipv4=ip, identity=ident)


def test_publish_create_update_unchanged_and_stale_cleanup(installed):
    kube = installed
    labels = frozenset({"k8s:app=web"})
    assert ceps.publish(kube, ep("web", 300, "10.1.0.5"), "node-a", labels) == "created"
    assert ceps.publish(kube, ep("web", 300, "10.1.0.5"), "node-a", labels) == "unchanged"
    assert ceps.publish(kube, ep("web", 301, "10.1.0.5"), "node-a", labels) == "updated"
    obj = kube.get(KINDS["CiliumEndpoint"], "web", "default")
    assert obj["status"]["identity"] == {"id": 301, "labels": ["k8s:app=web"]}
    assert obj["status"]["networking"] == {"node": "node-a", "addressing": [{"ipv4": "10.1.0.5"}]}

    ceps.publish(kube, ep("old", 302, "10.1.0.6"), "node-a")
    ceps.publish(kube, ep("other-node", 303, "10.2.0.7"), "node-b")
    counts = ceps.sync_node(kube, "node-a", [(ep("web", 301, "10.1.0.5"), labels)])
    assert counts == {"created": 0, "updated": 0, "unchanged": 1, "deleted": 1}
    assert kube.get(KINDS["CiliumEndpoint"], "old", "default") is None
    assert kube.get(KINDS["CiliumEndpoint"], "other-node", "default") is not None  # not ours to delete


def test_list_all_nodes_rows(installed, kubeconfig, new_namespace):
    kube = installed
    shop = new_namespace("shop")
    ceps.publish(kube, ep("db", 400, "10.2.0.9", ns=shop, id_=7), "node-b", frozenset({"k8s:app=db"}))
    ceps.publish(kube, ep("web", 401, "10.1.0.5", id_=3), "node-a", frozenset({"k8s:app=web"}))
    rows = ceps.list_all_nodes(kubeconfig=kubeconfig)
    assert [(r["node"], r["namespace"], r["name"], r["id"], r["identity"], r["ipv4"]) for r in rows] == [
        ("node-a", "default", "web", 3, 401, "10.1.0.5"), ("node-b", shop, "db", 7, 400, "10.2.0.9")]
    assert [r["name"] for r in ceps.remote_endpoints(kube.list(KINDS["CiliumEndpoint"])[0], "node-a")] == ["db"]


def test_sources_give_local_pods_with_namespace_labels(installed, new_namespace):
    kube = installed
    shop = new_namespace("shop", {"team": "a"})
    for name, node, host in (("web", "n1", False), ("agent", "n1", True), ("db", "n2", False)):
        add_pod(kube, name, node, "10.1.0.5" if name == "web" else "", {"app": name}, shop, host, "sa-" + name)
    cache = ClusterCache(kube, node_name="n1").start()
    try:
        assert cache.wait_synced(5)
        assert wait_until(lambda: len(cache.objects("Pod")) == 2)
        eps = sources.endpoints_from_pods(cache, "n1")
        assert [e.name for e in eps] == ["web"]  # host-network pods are not endpoints; n2's pods not ours
        web = eps[0]
        assert web.labels == {"app": "web", "io.cilium.k8s.namespace.labels.team": "a",
                              "io.cilium.k8s.namespace.labels.ciliumctl-test": "true",
                              "io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name": shop}
        assert web.service_account == "sa-web" and web.ipv4 == "10.1.0.5" and web.node == "n1"
        # an endpoint made by the CNI plugin (no labels) gets its pod's labels, matched by address
        cni = Endpoint(id=9, name="cni-abc", namespace=shop, ipv4="10.1.0.5", host_ifname="lxc1")
        enriched = sources.enrich([cni], cache, "n1")[0]
        assert enriched.id == 9 and enriched.host_ifname == "lxc1" and enriched.labels["app"] == "web"
        assert enriched.name == "web"
    finally:
        cache.stop()
