"""The endpoint registry: one JSON file per endpoint at `<state>/endpoints/<id>.json`.

Writes are atomic (tmp + rename), so readers such as `endpoint list`, the agent or the CNI plugin may read at any
time without a lock; writers hold the node lock (ciliumctl.node) so that ids are never handed out twice.

A record that is there but cannot be read as an endpoint (truncated, not JSON, missing keys) is never skipped in
silence: load_all() and load() refuse with a message naming the file, since programming policy without one of
the node's endpoints would give wrong verdicts; scan() lists it beside the good ones for commands that only
report (`endpoint list`, `status`) or clean up (`endpoint delete ID`, uninstall)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ciliumctl.base import paths, statefile
from ciliumctl.base.errors import EnvironmentProblem, UsageError
from ciliumctl.endpoints.model import Endpoint

MAX_ID = 65535


@dataclass
class CorruptRecord:
    id: int
    path: Path
    reason: str

    def problem(self) -> EnvironmentProblem:
        return EnvironmentProblem(f"{self.path}: corrupt endpoint state file ({self.reason}); remove endpoint "
                                  f"{self.id} and what it left in the kernel with `ciliumctl endpoint delete "
                                  f"{self.id}`")


def endpoints_dir() -> Path:
    return paths.state_dir() / "endpoints"


def _path(ep_id: int) -> Path:
    return endpoints_dir() / f"{ep_id}.json"


def save(ep: Endpoint) -> None:
    if not 1 <= ep.id <= MAX_ID:
        raise UsageError(f"endpoint id {ep.id} is out of range 1..{MAX_ID}")
    statefile.write_json(_path(ep.id), ep.to_dict())


def _read(ep_id: int, path: Path) -> Endpoint | CorruptRecord | None:
    try:
        data = statefile.read_json(path)
    except statefile.CorruptStateFile as err:
        return CorruptRecord(ep_id, path, err.reason)
    if data is None:
        return None
    try:
        ep = Endpoint.from_dict(data)
    except ValueError as err:
        return CorruptRecord(ep_id, path, str(err))
    if ep.id != ep_id:
        return CorruptRecord(ep_id, path, f"it says id {ep.id}")
    return ep


def load(ep_id: int) -> Endpoint | None:
    found = _read(ep_id, _path(ep_id))
    if isinstance(found, CorruptRecord):
        raise found.problem()
    return found


def ids() -> set[int]:
    """Ids that have a record, readable or not (a corrupt record still holds its id)."""
    d = endpoints_dir()
    if not d.is_dir():
        return set()
    return {int(p.stem) for p in d.glob("*.json") if p.stem.isdigit() and 1 <= int(p.stem) <= MAX_ID}


def scan() -> tuple[list[Endpoint], list[CorruptRecord]]:
    """Every readable endpoint by id, and the records that could not be read."""
    good: list[Endpoint] = []
    bad: list[CorruptRecord] = []
    for ep_id in sorted(ids()):
        found = _read(ep_id, _path(ep_id))
        if isinstance(found, CorruptRecord):
            bad.append(found)
        elif found is not None:
            good.append(found)
    return good, bad


def load_all() -> list[Endpoint]:
    """Every registered endpoint, by id. Refuses (naming the file) when a record is corrupt."""
    good, bad = scan()
    if bad:
        raise bad[0].problem()
    return good


def remove(ep_id: int) -> bool:
    try:
        _path(ep_id).unlink()
        return True
    except FileNotFoundError:
        return False


def next_id(taken: set[int] | None = None) -> int:
    """The lowest id without a record and not in `taken` (call under the node lock)."""
    used = ids() | (taken or set())
    for i in range(1, MAX_ID + 1):
        if i not in used:
            return i
    raise EnvironmentProblem(f"all {MAX_ID} endpoint ids are in use; delete endpoints first")


def find(ref: str, namespace: str | None = None) -> Endpoint | None:
    """An endpoint by id, by NAME (optionally within `namespace`) or by NAMESPACE/NAME. A corrupt record that
    could be the one asked for is an error naming it."""
    ref = ref.strip()
    endpoints, bad = scan()
    if ref.isdigit():
        for ep in endpoints:
            if ep.id == int(ref):
                return ep
        for rec in bad:
            if rec.id == int(ref):
                raise rec.problem()
        return None
    if "/" in ref:
        namespace, ref = ref.split("/", 1)
    matches = [ep for ep in endpoints if ep.name == ref and (namespace is None or ep.namespace == namespace)]
    if len(matches) > 1:
        where = ", ".join(f"{ep.namespace}/{ep.name} (id {ep.id})" for ep in matches)
        raise UsageError(f"endpoint name {ref!r} is ambiguous: {where}; give NAMESPACE/NAME or the id")
    if not matches and bad:
        raise bad[0].problem()
    return matches[0] if matches else None
