"""List + watch on a real API server (the shared one of tests/k8s/conftest.py): a Reflector lists, then follows
events from the list's resourceVersion; the agent's ClusterCache sees its own node's pods only. (A cut stream, a
410 Gone and failing lists need a server that fails on demand: tests/cluster/test_cluster_watch.py.)"""

import pytest
from support.shell import wait_until
from support.watch_recorder import Recorder

from ciliumctl.cluster.kube import KINDS
from ciliumctl.cluster.watch import ClusterCache, Reflector
from k8s.objects import add_pod

pytestmark = [pytest.mark.root]


def cm(name):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}}


def test_reflector_lists_then_follows_events(kube):
    kube.create(cm("before"))
    rec = Recorder()
    r = Reflector(kube, KINDS["ConfigMap"], rec, namespace="default").start()
    try:
        assert r.synced.wait(5)
        assert rec.seen("ADDED", "before")
        kube.create(cm("later"))
        obj = kube.get(KINDS["ConfigMap"], "later", "default")
        obj["data"] = {"k": "v"}
        kube.replace(obj)
        kube.delete(KINDS["ConfigMap"], "before", "default")
        assert wait_until(lambda: rec.seen("DELETED", "before"))
        assert rec.seen("ADDED", "later") and rec.seen("MODIFIED", "later")
        assert sorted(n for _, n in r.items if n != "kube-root-ca.crt") == ["later"]
        assert r.stats.lists == 1
    finally:
        r.stop()


def test_watches_again_from_the_last_resource_version_when_the_server_ends_the_watch(kube):
    """The server ends every watch after timeoutSeconds (client-go asks for a random 5-10 min): the reflector
    watches again from the last resourceVersion it saw, without a relist, and misses nothing in between."""
    rec = Recorder()
    r = Reflector(kube, KINDS["ConfigMap"], rec, namespace="default", timeout_seconds=1).start()
    try:
        assert r.synced.wait(5)
        kube.create(cm("first"))
        assert wait_until(lambda: r.stats.watches >= 2, 10)
        kube.create(cm("after-the-end"))
        assert wait_until(lambda: rec.seen("ADDED", "after-the-end"))
        assert rec.seen("ADDED", "first") and r.stats.lists == 1 and r.stats.errors == 0
    finally:
        r.stop()


def test_cluster_cache_sees_this_nodes_pods_only_and_wakes_waiters(installed):
    kube = installed
    cache = ClusterCache(kube, node_name="n1").start()
    try:
        assert cache.wait_synced(5)
        gen = cache.generation
        for node in ("n1", "n2"):
            add_pod(kube, f"p-{node}", node)
        assert cache.wait_change(gen, 5) != gen
        assert wait_until(lambda: [p["metadata"]["name"] for p in cache.objects("Pod")] == ["p-n1"])
        assert cache.get("Namespace", "default") is not None
    finally:
        cache.stop()
