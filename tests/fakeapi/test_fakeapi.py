"""The fake API server behaves like the real one where the watch fault tests (tests/cluster) depend on it, seen
through the official kubernetes client."""

import threading
import time

import pytest
import urllib3
from kubernetes import client, config, watch

from fakeapi import FakeApiServer


@pytest.fixture
def api(fake, tmp_path):
    return config.new_client_from_config(str(fake.write_kubeconfig(tmp_path / "kubeconfig")))


def test_crud_conflicts_and_selectors(api):
    v1 = client.CoreV1Api(api)
    v1.create_namespaced_config_map("default", {"metadata": {"name": "a", "labels": {"app": "x"}}, "data": {"k": "1"}})
    v1.create_namespaced_config_map("default", {"metadata": {"name": "b", "labels": {"app": "y"}}})
    with pytest.raises(client.ApiException) as err:
        v1.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    assert err.value.status == 409 and err.value.reason == "Conflict"
    with pytest.raises(client.ApiException) as err:
        v1.create_namespaced_config_map("nope", {"metadata": {"name": "a"}})
    assert err.value.status == 404

    first = v1.read_namespaced_config_map("a", "default")
    first.data = {"k": "2"}
    second = v1.replace_namespaced_config_map("a", "default", first)
    assert int(second.metadata.resource_version) > int(first.metadata.resource_version)
    first.data = {"k": "3"}  # still carries the old resourceVersion
    with pytest.raises(client.ApiException) as err:
        v1.replace_namespaced_config_map("a", "default", first)
    assert err.value.status == 409

    names = lambda sel: sorted(i.metadata.name for i in v1.list_namespaced_config_map("default",
                                                                                       label_selector=sel).items)
    assert names("app=x") == ["a"]
    assert names("app in (x,y)") == ["a", "b"]
    assert names("app!=x") == ["b"]
    assert names("!app") == []
    v1.delete_namespaced_config_map("a", "default")
    assert names("") == ["b"]


def test_watch_streams_events_and_410_after_compaction(fake, api):
    v1 = client.CoreV1Api(api)
    v1.create_namespace({"metadata": {"name": "w"}})
    _, rv = v1.list_namespaced_config_map("w").items, v1.list_namespaced_config_map("w").metadata.resource_version

    def writer():
        time.sleep(0.2)
        v1.create_namespaced_config_map("w", {"metadata": {"name": "x"}})
        v1.delete_namespaced_config_map("x", "w")

    threading.Thread(target=writer).start()
    seen = []
    w = watch.Watch()
    for event in w.stream(v1.list_namespaced_config_map, "w", resource_version=rv, timeout_seconds=5):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 2:
            w.stop()
    assert seen == [("ADDED", "x"), ("DELETED", "x")]

    fake.compact()
    with pytest.raises(client.ApiException) as err:
        for _ in watch.Watch().stream(v1.list_namespaced_config_map, "w", resource_version=rv, timeout_seconds=5):
            pass
    assert err.value.status == 410


def test_field_selector_generate_name_and_namespace_cascade(api):
    v1 = client.CoreV1Api(api)
    v1.create_namespace({"metadata": {"name": "gone"}})
    pod = v1.create_namespaced_pod("gone", {"metadata": {"generateName": "p-"},
                                            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}})
    assert pod.metadata.name.startswith("p-")
    on_n1 = v1.list_pod_for_all_namespaces(field_selector="spec.nodeName=n1").items
    on_n2 = v1.list_pod_for_all_namespaces(field_selector="spec.nodeName=n2").items
    assert [p.metadata.name for p in on_n1] == [pod.metadata.name] and on_n2 == []
    v1.delete_namespace("gone")
    assert v1.list_pod_for_all_namespaces().items == []


def test_bookmarks_and_cut_streams(tmp_path):
    with FakeApiServer(bookmark_interval=0.1) as server:
        api = config.new_client_from_config(str(server.write_kubeconfig(tmp_path / "kc")))
        v1 = client.CoreV1Api(api)
        rv = v1.list_namespaced_config_map("default").metadata.resource_version
        w = watch.Watch()
        for event in w.stream(v1.list_namespaced_config_map, "default", resource_version=rv,
                              allow_watch_bookmarks=True, timeout_seconds=5):
            assert event["type"] == "BOOKMARK"
            w.stop()
        assert int(w.resource_version) >= int(rv)

        def cut():
            time.sleep(0.3)
            server.drop_watches()

        threading.Thread(target=cut).start()
        started = time.monotonic()
        # the stream breaks off without its final chunk: urllib3 says the response ended prematurely
        with pytest.raises(urllib3.exceptions.HTTPError):
            resp = v1.list_namespaced_config_map("default", watch=True, resource_version=rv,
                                                 _preload_content=False, timeout_seconds=30)
            for _ in watch.watch.iter_resp_lines(resp):
                pass
        assert time.monotonic() - started < 5
