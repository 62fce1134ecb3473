"""List + watch faults a real API server does not give on demand, on the fake (tests/fakeapi): a stream cut
mid-way, 410 Gone after compaction, failing lists. The rest of the watch is tested on the real server
(tests/k8s/test_api_watch.py)."""

from support.shell import wait_until
from support.watch_recorder import Recorder

from ciliumctl.cluster.kube import KINDS
from ciliumctl.cluster.watch import Reflector


def cm(name, **labels):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default",
                                                                  "labels": labels}}


def server_names(fake):
    items, _ = fake.store.list(fake.store.resource_type("", "v1", "configmaps"), "default")
    return sorted(i["metadata"]["name"] for i in items)


def test_reconnects_from_last_resource_version_after_a_cut_stream(fake_kube, fake):
    # fake: the real server ends a watch only cleanly (timeoutSeconds); a connection dropped mid-stream is the fake's
    kube = fake_kube
    rec = Recorder()
    r = Reflector(kube, KINDS["ConfigMap"], rec, namespace="default", backoff=(0.05, 0.2)).start()
    try:
        assert r.synced.wait(5)
        assert wait_until(lambda: fake.watches_open >= 1)
        fake.drop_watches()
        kube.create(cm("after-cut"))
        assert wait_until(lambda: rec.seen("ADDED", "after-cut"))
        assert r.stats.watches >= 2 and r.stats.lists == 1  # watched again, no relist needed
    finally:
        r.stop()


def test_relists_after_410_gone_and_reports_what_it_missed(fake_kube, fake):
    # fake: 410 Gone needs etcd compacted past the watch cache's window while the agent is away, not on demand
    kube = fake_kube
    kube.create(cm("doomed"))
    rec = Recorder()
    r = Reflector(kube, KINDS["ConfigMap"], rec, namespace="default", backoff=(0.2, 0.4)).start()
    try:
        assert r.synced.wait(5)
        assert wait_until(lambda: fake.watches_open >= 1)
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


def test_retries_when_the_first_list_fails(fake_kube, fake):
    # fake: the real server does not answer 500 to a list on demand
    kube = fake_kube
    fake.fail_next(2, 500, "GET", "configmaps")
    r = Reflector(kube, KINDS["ConfigMap"], namespace="default", backoff=(0.05, 0.1)).start()
    try:
        assert r.synced.wait(5)
        assert r.stats.errors == 2 and r.stats.lists == 1
    finally:
        r.stop()
