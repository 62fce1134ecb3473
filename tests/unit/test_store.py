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
