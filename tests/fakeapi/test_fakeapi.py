"""The fake API server behaves like the real one where cluster code depends on it, seen through the official
kubernetes client."""

import threading
import time

import pytest
import urllib3
from kubernetes import client, config, watch

from fakeapi import FakeApiServer

CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.io"},
    "spec": {"group": "example.io", "scope": "Namespaced",
             "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wg"]},
             "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                           "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                               "spec": {"type": "object", "properties": {
                                   "size": {"type": "integer"},
                                   "color": {"type": "string", "enum": ["red", "blue"]}}},
                               "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}}}]},
}


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


def test_crd_registers_paths_validates_and_prunes(api):
    ext = client.ApiextensionsV1Api(api)
    ext.create_custom_resource_definition(CRD)
    custom = client.CustomObjectsApi(api)
    obj = custom.create_namespaced_custom_object("example.io", "v1", "default", "widgets", {
        "apiVersion": "example.io/v1", "kind": "Widget", "metadata": {"name": "w1"},
        "spec": {"size": 3, "unknown": True}, "status": {"ignored": 1}})
    assert obj["spec"] == {"size": 3}  # unknown field pruned, status not writable on the main resource
    assert "status" not in obj
    with pytest.raises(client.ApiException) as err:
        custom.create_namespaced_custom_object("example.io", "v1", "default", "widgets", {
            "apiVersion": "example.io/v1", "kind": "Widget", "metadata": {"name": "w2"}, "spec": {"color": "green"}})
    assert err.value.status == 422 and "Unsupported value" in err.value.body

    obj["status"] = {"phase": "ok"}
    updated = custom.replace_namespaced_custom_object_status("example.io", "v1", "default", "widgets", "w1", obj)
    assert updated["status"] == {"phase": "ok"} and updated["metadata"]["generation"] == 1

    resources = client.CustomObjectsApi(api).get_api_resources("example.io", "v1")
    assert "widgets" in [r.name for r in resources.resources]

    ext.delete_custom_resource_definition("widgets.example.io")
    with pytest.raises(client.ApiException) as err:
        custom.list_namespaced_custom_object("example.io", "v1", "default", "widgets")
    assert err.value.status == 404


def test_server_side_apply_ownership(api):
    v1 = client.CoreV1Api(api)
    apply = lambda body, manager, force=False: v1.patch_namespaced_config_map(
        "c", "default", body, field_manager=manager, force=force, _content_type="application/apply-patch+yaml")
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}}
    created = apply(body, "one")
    again = apply(body, "one")
    assert again.metadata.resource_version == created.metadata.resource_version  # no-op: no write

    body["data"] = {"a": "1"}  # b dropped from the applied config: removed from the object
    changed = apply(body, "one")
    assert changed.data == {"a": "1"}
    assert int(changed.metadata.resource_version) > int(created.metadata.resource_version)

    other = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "9"}}
    with pytest.raises(client.ApiException) as err:
        apply(other, "two")
    assert err.value.status == 409 and "conflict" in err.value.body
    assert apply(other, "two", force=True).data == {"a": "9"}

    dry = v1.patch_namespaced_config_map("c", "default", {**other, "data": {"a": "dry"}}, field_manager="two",
                                         dry_run="All", _content_type="application/apply-patch+yaml")
    assert dry.data == {"a": "dry"}
    assert v1.read_namespaced_config_map("c", "default").data == {"a": "9"}


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


def test_bookmarks_discovery_and_cut_streams(tmp_path):
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

        groups = {g.name for g in client.ApisApi(api).get_api_versions().groups}
        assert {"apps", "networking.k8s.io", "rbac.authorization.k8s.io", "apiextensions.k8s.io"} <= groups
        core = client.CoreV1Api(api).get_api_resources()
        assert {"pods", "pods/status", "namespaces", "nodes"} <= {r.name for r in core.resources}

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
