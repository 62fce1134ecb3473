"""The node's service store (node mode): `<state>/services.json`, written atomically and root-only
(base.statefile). Callers hold the node lock around read-modify-program."""

from __future__ import annotations

from pathlib import Path

from ciliumctl.base import paths, statefile
from ciliumctl.base.errors import EnvironmentProblem
from ciliumctl.services.model import ServiceTable


def store_path() -> Path:
    return paths.state_dir() / "services.json"


def load() -> ServiceTable:
    data = statefile.read_json(store_path(), default=None)
    if not data:
        return ServiceTable()
    try:
        return ServiceTable.from_dict(data)
    except Exception as err:   # a file ciliumctl did not write this way: name it, never a traceback
        raise EnvironmentProblem(f"{store_path()}: not a service table ({err}); fix or remove the file (its "
                                 "services are then gone)") from None


def save(table: ServiceTable) -> None:
    statefile.write_json(store_path(), table.to_dict(), compact=True)
