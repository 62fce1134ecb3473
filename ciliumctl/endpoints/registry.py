"""The endpoint registry: one JSON file per endpoint at `<state>/endpoints/<id>.json`.

Writes are atomic (tmp + rename), so readers such as `endpoint list`, the agent or the CNI plugin may read at any
time without a lock; writers hold the node lock (ciliumctl.node) so that ids are never handed out twice."""

from __future__ import annotations

from pathlib import Path

from ciliumctl.base import paths, statefile
from ciliumctl.endpoints.model import Endpoint
from ciliumctl.base.errors import EnvironmentProblem, UsageError

MAX_ID = 65535


def endpoints_dir() -> Path:
    return paths.state_dir() / "endpoints"


def _path(ep_id: int) -> Path:
    return endpoints_dir() / f"{ep_id}.json"


def save(ep: Endpoint) -> None:
    if not 1 <= ep.id <= MAX_ID:
        raise UsageError(f"endpoint id {ep.id} is out of range 1..{MAX_ID}")
    statefile.write_json(_path(ep.id), ep.to_dict())


def load(ep_id: int) -> Endpoint | None:
    data = statefile.read_json(_path(ep_id))
    return Endpoint.from_dict(data) if data else None


def load_all() -> list[Endpoint]:
    """Every registered endpoint, by id."""
    d = endpoints_dir()
    if not d.is_dir():
        return []
    found = []
    for p in d.glob("*.json"):
        if not p.stem.isdigit():
            continue
        data = statefile.read_json(p)
        if data:
            found.append(Endpoint.from_dict(data))
    return sorted(found, key=lambda e: e.id)


def remove(ep_id: int) -> bool:
    try:
        _path(ep_id).unlink()
        return True
    except FileNotFoundError:
        return False


def next_id(taken: set[int] | None = None) -> int:
    """The lowest unused endpoint id (call under the node lock)."""
    used = {e.id for e in load_all()} if taken is None else taken
    for i in range(1, MAX_ID + 1):
        if i not in used:
            return i
    raise EnvironmentProblem(f"all {MAX_ID} endpoint ids are in use; delete endpoints first")


def find(ref: str, namespace: str | None = None) -> Endpoint | None:
    """An endpoint by id, by NAME (optionally within `namespace`) or by NAMESPACE/NAME."""
    ref = ref.strip()
    endpoints = load_all()
    if ref.isdigit():
        for ep in endpoints:
            if ep.id == int(ref):
                return ep
        return None
    if "/" in ref:
        namespace, ref = ref.split("/", 1)
    matches = [ep for ep in endpoints if ep.name == ref and (namespace is None or ep.namespace == namespace)]
    if len(matches) > 1:
        where = ", ".join(f"{ep.namespace}/{ep.name} (id {ep.id})" for ep in matches)
        raise UsageError(f"endpoint name {ref!r} is ambiguous: {where}; give NAMESPACE/NAME or the id")
    return matches[0] if matches else None
