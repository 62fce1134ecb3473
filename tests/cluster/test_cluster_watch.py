"""List + watch: events, reconnect after a cut stream, relist after 410 Gone, retry after server errors."""

import threading

from support.shell import wait_until

from ciliumctl.cluster.kube import KINDS
from ciliumctl.cluster.watch import ClusterCache, Reflector


class Recorder:
    def __init__(self):
        self.events = []
        self.lock = threading.Lock()

    def __call__(self, kind, type_, obj):
        with self.lock:
            self.events.append((type_, obj["metadata"]["name"]))

    def seen(self, *event):
        with self.lock:
            return tuple(event) in self.events


def cm(name, **labels):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default",
                                                                  "labels": labels}}


def server_names(fake):
    items, _ = fake.store.list(fake.store.resource_type("", "v1", "configmaps"), "default")
    return sorted(i["metadata"]["name"] for i in items)


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
        assert sorted(n for _, n in r.items) == ["later"]
        assert r.stats.lists == 1
    finally:
        r.stop()


def test_reconnects_from_last_resource_version_after_a_cut_stream(kube, fake):
    rec = Recorder()
    r = Reflector(kube, KINDS["ConfigMap"], rec, namespace="default", backoff=(0.05, 0.2)).start()
    try:
        assert r.synced.wait(5)
        assert wait_until(lambda: fake.count("GET", "configmaps", "watch") >= 1)
        fake.drop_watches()
        kube.create(cm("after-cut"))
        assert wait_until(lambda: rec.seen("ADDED", "after-cut"))
        assert r.stats.watches >= 2 and r.stats.lists == 1  # watched again, no relist needed
    finally:
        r.stop()


def test_relists_after_410_gone_and_reports_what_it_missed(kube, fake):
    kube.create(cm("doomed"))
    rec = Recorder()
    r = Reflector(kube, KINDS["ConfigMap"], rec, namespace="default", backoff=(0.2, 0.4)).start()
    try:
        assert r.synced.wait(5)
        assert wait_until(lambda: fake.count("GET", "configmaps", "watch") >= 1)
        # cut the stream and keep the agent out for a while; meanwhile the cluster changes and etcd compacts
        fake.fail_next(2, 503, "GET", "configmaps")
        fake.drop_watches()
        store, rt = fake.store, fake.store.resource_type("", "v1", "configmaps")
        store.delete(rt, "default", "doomed")
        store.create(rt, "default", cm("born-while-away"))
        fake.compact()
        assert wait_until(lambda: r.stats.gone >= 1 and r.stats.lists >= 2)
        assert wait_until(lambda: sorted(n for _, n in r.items) == server_names(fake))
        assert rec.seen("DELETED", "doomed") and rec.seen("ADDED", "born-while-away")
        assert r.stats.errors >= 1
        kube.create(cm("after-relist"))  # and it keeps watching from the new list's resourceVersion
        assert wait_until(lambda: rec.seen("ADDED", "after-relist"))
    finally:
        r.stop()


def test_retries_when_the_first_list_fails(kube, fake):
    fake.fail_next(2, 500, "GET", "configmaps")
    r = Reflector(kube, KINDS["ConfigMap"], namespace="default", backoff=(0.05, 0.1)).start()
    try:
        assert r.synced.wait(5)
        assert r.stats.errors == 2 and r.stats.lists == 1
    finally:
        r.stop()


def test_cluster_cache_sees_this_nodes_pods_only_and_wakes_waiters(installed):
    kube = installed
    cache = ClusterCache(kube, node_name="n1").start()
    try:
        assert cache.wait_synced(5)
        gen = cache.generation
        for node in ("n1", "n2"):
            kube.create({"apiVersion": "v1", "kind": "Pod",
                         "metadata": {"name": f"p-{node}", "namespace": "default"},
                         "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]}})
        assert cache.wait_change(gen, 5) != gen
        assert wait_until(lambda: [p["metadata"]["name"] for p in cache.objects("Pod")] == ["p-n1"])
        assert cache.get("Namespace", "default") is not None
    finally:
        cache.stop()
