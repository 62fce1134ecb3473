"""The node's policy store: keyed by kind/namespace/name, created/configured/unchanged like kubectl apply."""

import pytest

from ciliumctl.base.errors import UsageError
from ciliumctl.policy import store


@pytest.fixture(autouse=True)
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("CILIUMCTL_STATE_DIR", str(tmp_path))
    return tmp_path


def cnp(name, ns=None, port="80"):
    meta = {"name": name} | ({"namespace": ns} if ns else {})
    return {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": meta,
            "spec": {"endpointSelector": {}, "ingress": [{"toPorts": [{"ports": [{"port": port}]}]}]}}


def test_put_verbs_and_keys(state):
    p = store.from_object(cnp("a"))
    assert (p.kind, p.namespace, p.name, p.resource) == ("CiliumNetworkPolicy", "default", "a",
                                                         "ciliumnetworkpolicy/a")
    assert store.put(p) == "created"
    assert store.put(p) == "unchanged"
    assert store.put(store.from_object(cnp("a", port="81"))) == "configured"
    assert store.get("CiliumNetworkPolicy", "default", "a").data["spec"]["ingress"][0]["toPorts"][0]["ports"][0][
        "port"] == "81"
    assert store.put(store.from_object(cnp("a", ns="prod"))) == "created"
    ccnp = cnp("a") | {"kind": "CiliumClusterwideNetworkPolicy"}
    assert store.from_object(ccnp).namespace == ""
    store.put(store.from_object(ccnp))
    assert [(p.kind, p.namespace) for p in store.load_all()] == [
        ("CiliumNetworkPolicy", "default"), ("CiliumNetworkPolicy", "prod"), ("CiliumClusterwideNetworkPolicy", "")]
    assert len(store.find("a")) == 3
    assert len(store.find("a", namespace="prod")) == 2       # the cluster-wide one matches any namespace


def test_delete(state):
    store.put(store.from_object(cnp("a")))
    assert store.delete("CiliumNetworkPolicy", "default", "a")
    assert not store.delete("CiliumNetworkPolicy", "default", "a")
    assert store.load_all() == []


def test_rejects_unstorable():
    with pytest.raises(UsageError, match="not a network policy"):
        store.from_object({"kind": "Pod", "metadata": {"name": "x"}})
    with pytest.raises(UsageError, match="metadata.name"):
        store.from_object({"kind": "CiliumNetworkPolicy", "metadata": {}})
    assert store.kind_of("cnp") == "CiliumNetworkPolicy"
    with pytest.raises(UsageError):
        store.kind_of("pod")


BAD_NAMES = ["../../../../escaped", "x/allow-c", "..", ".", "a/../b", "UPPER", "-lead", "x" * 254, "a\0b", ""]
BAD_NAMESPACES = ["../x", "a.b", "x/y", "..", "UPPER", "x" * 64]


@pytest.mark.parametrize("name", [n for n in BAD_NAMES if n])
def test_names_the_api_server_refuses_are_a_finding_before_anything_is_written(state, name):
    from ciliumctl.base.errors import Finding

    with pytest.raises(Finding, match="is not a valid name"):
        store.from_object(cnp(name), "p.yaml")
    assert not any(state.rglob("*"))


@pytest.mark.parametrize("namespace", BAD_NAMESPACES)
def test_namespaces_the_api_server_refuses_are_a_finding(state, namespace):
    from ciliumctl.base.errors import Finding

    with pytest.raises(Finding, match="is not a valid namespace"):
        store.from_object(cnp("ok", ns=namespace), "p.yaml")


@pytest.mark.parametrize("name", BAD_NAMES)
def test_no_path_is_ever_built_from_an_unchecked_name(state, name):
    """get/delete take names from the command line: a bad one is a usage error, never a path outside the store."""
    with pytest.raises(UsageError):
        store.get("CiliumNetworkPolicy", "default", name)
    with pytest.raises(UsageError):
        store.delete("CiliumNetworkPolicy", "default", name)
    with pytest.raises(UsageError):
        store.get("CiliumNetworkPolicy", "../../x", "ok")


def test_a_dotted_subdomain_name_is_fine(state):
    assert store.put(store.from_object(cnp("allow.web-1", ns="prod-2"))) == "created"
    assert [p.name for p in store.load_all()] == ["allow.web-1"]
