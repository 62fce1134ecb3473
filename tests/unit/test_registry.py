"""The endpoint registry: one atomic JSON file per endpoint, lookups by id, name and namespace/name."""

import pytest

from ciliumctl.base.errors import UsageError
from ciliumctl.endpoints import registry
from ciliumctl.endpoints.model import Endpoint


@pytest.fixture(autouse=True)
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("CILIUMCTL_STATE_DIR", str(tmp_path))
    return tmp_path


def test_save_load_roundtrip_and_ids(state):
    assert registry.load_all() == [] and registry.next_id() == 1
    a = Endpoint(id=1, name="web", labels={"app": "web"}, ipv4="10.200.0.1", identity=300)
    b = Endpoint(id=3, name="web", namespace="prod")
    registry.save(b)
    registry.save(a)
    assert [e.id for e in registry.load_all()] == [1, 3]
    assert registry.load(1) == a
    assert registry.next_id() == 2
    assert (state / "endpoints" / "1.json").is_file()
    assert not list((state / "endpoints").glob(".*tmp"))      # no temp files left behind


def test_find(state):
    registry.save(Endpoint(id=1, name="web"))
    registry.save(Endpoint(id=2, name="web", namespace="prod"))
    registry.save(Endpoint(id=3, name="db"))
    assert registry.find("3").name == "db"
    assert registry.find("prod/web").id == 2
    assert registry.find("web", namespace="default").id == 1
    assert registry.find("nope") is None and registry.find("42") is None
    with pytest.raises(UsageError, match="ambiguous"):
        registry.find("web")


def test_remove_and_out_of_range(state):
    registry.save(Endpoint(id=5, name="x"))
    assert registry.remove(5) and not registry.remove(5)
    with pytest.raises(UsageError):
        registry.save(Endpoint(id=0, name="x"))


def _ep(i: int, **kw) -> Endpoint:
    return Endpoint(id=i, name=f"ep{i}", ipv4=f"10.200.0.{i}", netns=f"/run/netns/x-ep{i}", host_ifname=f"cctlep{i}",
                    host_ifindex=10 + i, **kw)


CORRUPT_RECORDS = {
    "empty file": "",
    "not JSON": "{id: 2",
    "missing keys": '{"id": 2}',
    "a list": "[2]",
    "id a string": None,
    "labels a list": None,
    "bad ipv4": None,
    "other id": None,
}


def _corrupt_text(kind: str) -> str:
    import json

    if CORRUPT_RECORDS[kind] is not None:
        return CORRUPT_RECORDS[kind]
    d = _ep(2).to_dict()
    d.update({"id a string": {"id": "2"}, "labels a list": {"labels": ["a"]}, "bad ipv4": {"ipv4": "999.1.1.1"},
              "other id": {"id": 3}}[kind])
    return json.dumps(d)


@pytest.mark.parametrize("kind", sorted(CORRUPT_RECORDS))
def test_a_corrupt_record_is_never_skipped_in_silence(state, kind):
    from ciliumctl.base.errors import EnvironmentProblem

    registry.save(_ep(1))
    registry.save(_ep(3))
    bad = state / "endpoints" / "2.json"
    bad.write_text(_corrupt_text(kind))
    good, corrupt = registry.scan()
    assert [e.id for e in good] == [1, 3] and [c.id for c in corrupt] == [2]
    for call in (registry.load_all, lambda: registry.load(2), lambda: registry.find("2"),
                 lambda: registry.find("nope")):
        with pytest.raises(EnvironmentProblem) as err:
            call()
        msg = str(err.value)
        assert str(bad) in msg and "ciliumctl endpoint delete 2" in msg and "\n" not in msg
    assert registry.find("ep1").id == 1                    # what can be told apart still is
    assert registry.next_id() == 4 and registry.ids() == {1, 2, 3}   # a corrupt record keeps its id


def test_every_truncation_of_a_record_is_refused_or_read_whole(state):
    registry.save(_ep(2, labels={"app": "web"}, identity=300))
    path = state / "endpoints" / "2.json"
    full = path.read_bytes()
    whole = 0
    for cut in range(len(full)):
        path.write_bytes(full[:cut])
        good, corrupt = registry.scan()
        assert (good, [c.id for c in corrupt]) in (([], [2]), ([_ep(2, labels={"app": "web"}, identity=300)], []))
        whole += bool(good)
    assert whole == 1          # only the cut that drops the final newline reads whole
