"""The endpoint registry: one atomic JSON file per endpoint, lookups by id, name and namespace/name."""

import pytest

from ciliumctl.endpoints import registry
from ciliumctl.endpoints.model import Endpoint
from ciliumctl.base.errors import UsageError


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
