"""Node-level pieces that need no root: label parsing, settings, the map-change diff of a dry run."""

import pytest

from ciliumctl.base.errors import UsageError
from ciliumctl.node import endpoint_ops, policy_ops
from ciliumctl.node import reconcile as node_reconcile
from ciliumctl.node import settings as node_settings
from ciliumctl.policy.resolved import DirectionPolicy, EndpointPolicy, PolicyEntry, PortRange, ResolvedState


@pytest.fixture(autouse=True)
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("CILIUMCTL_STATE_DIR", str(tmp_path))
    return tmp_path


def test_parse_labels():
    assert endpoint_ops.parse_labels("org=empire,class=deathstar") == {"org": "empire", "class": "deathstar"}
    assert endpoint_ops.parse_labels(["a=1", "b=2,k8s:c="]) == {"a": "1", "b": "2", "c": ""}
    assert endpoint_ops.parse_labels("app.kubernetes.io/name=web") == {"app.kubernetes.io/name": "web"}
    for bad in ("novalue", "=x", "a=b c", "-a=b"):
        with pytest.raises(UsageError, match="key=value"):
            endpoint_ops.parse_labels(bad)


def test_names():
    assert endpoint_ops.check_name("endpoint name", "tie-fighter1") == "tie-fighter1"
    for bad in ("Tie", "-x", "a_b", "", "x" * 64):
        with pytest.raises(UsageError):
            endpoint_ops.check_name("endpoint name", bad)


def test_settings_roundtrip_and_modes(state):
    s = node_settings.load_settings()
    assert (s.mode.value, s.audit, s.revision, s.installed) == ("default", False, 0, False)
    s.enforcement_mode, s.audit, s.revision = "always", True, 7
    node_settings.save_settings(s)
    again = node_settings.load_settings()
    assert (again.enforcement_mode, again.audit, again.revision) == ("always", True, 7)
    assert node_settings.parse_mode("NEVER").value == "never"
    with pytest.raises(UsageError, match="default, always or never"):
        node_settings.parse_mode("sometimes")
    (state / "node.json").write_text('{"enforcement_mode": "bogus"}')
    with pytest.raises(Exception, match="invalid node settings"):
        node_settings.load_settings()


def _state(entries):
    ing = DirectionPolicy(bool(entries), list(entries))
    return ResolvedState(1, {}, {"10.200.0.1/32": 256},
                         {1: EndpointPolicy(1, 256, ing, DirectionPolicy(False))})


def test_diff_states():
    old = _state([])
    new = _state([PolicyEntry(257, PortRange(6, 80, 80), False), PolicyEntry(0, PortRange(17, 1000, 2000), True)])
    diff = node_reconcile.diff_states(old, new)
    assert "- endpoint 1 ingress enforcement disabled" in diff
    assert "+ endpoint 1 ingress enforcement enabled" in diff
    assert "+ endpoint 1 ingress allow identity 257 tcp/80" in diff
    assert "+ endpoint 1 ingress deny identity any udp/1000-2000" in diff
    assert not any("ipcache" in line for line in diff)
    assert node_reconcile.diff_states(new, new) == []


def test_enforcement_record_torn_by_a_crash_reads_as_never_programmed(state):
    new = _state([PolicyEntry(257, PortRange(6, 80, 80), False)])
    node_reconcile.save_enforcement(new)
    assert node_reconcile.enforcement_of(1) == {"ingress": True, "egress": False, "identity": 256}
    node_reconcile.enforcement_path().write_bytes(b"")   # written without fsync: what an OS crash may leave
    assert node_reconcile.enforcement_of(1) == {}


def test_store_rolls_back_when_programming_fails(state, monkeypatch):
    from ciliumctl.base.errors import EnvironmentProblem
    from ciliumctl.policy import store

    monkeypatch.setattr(policy_ops, "require_root", lambda what: None)
    old = {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": {"name": "a"},
           "spec": {"endpointSelector": {}, "ingress": [{}]}}
    store.put(store.from_object(old))
    new = dict(old, spec={"endpointSelector": {}, "egress": [{}]})
    other = dict(old, metadata={"name": "b"})

    def refuse(*a, **k):
        raise EnvironmentProblem("the policy map is full")

    monkeypatch.setattr(policy_ops, "reconcile", refuse)
    with pytest.raises(EnvironmentProblem, match="full"):
        policy_ops.apply_policies([new, other])
    assert [(p.name, p.data) for p in store.load_all()] == [("a", old)]
    with pytest.raises(EnvironmentProblem):
        policy_ops.delete_policy("a")
    assert [p.name for p in store.load_all()] == ["a"]
