"""The node's service store (node mode): `<state>/services.json`, written atomically and root-only
(base.statefile). Callers hold the node lock around read-modify-program.

A process keeps the last table it read or wrote with the file's identity (inode, size, mtime): `service update`
stores its table and the reconcile right after loads it again, which parsed 10,000 services a second time
(~0.2 s); now it gets the same table back unless the file changed (an atomic write is a new inode)."""

from __future__ import annotations

import os
from pathlib import Path

from ciliumctl.base import paths, statefile
from ciliumctl.base.errors import EnvironmentProblem
from ciliumctl.base.gcpause import paused
from ciliumctl.services.model import ServiceTable

_last: tuple[tuple[str, int, int, int], ServiceTable] | None = None     # (path, inode, size, mtime_ns) -> table


def store_path() -> Path:
    return paths.state_dir() / "services.json"


def _stamp(path: Path) -> tuple[str, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (str(path), st.st_ino, st.st_size, st.st_mtime_ns)


def load() -> ServiceTable:
    global _last
    path = store_path()
    stamp = _stamp(path)
    if stamp is not None and _last is not None and _last[0] == stamp:
        return _last[1]
    with paused():
        data = statefile.read_json(path, default=None)
        if not data:
            return ServiceTable()
        try:
            table = ServiceTable.from_dict(data)
        except Exception as err:   # a file ciliumctl did not write this way: name it, never a traceback
            raise EnvironmentProblem(f"{path}: not a service table ({err}); fix or remove the file (its "
                                     "services are then gone)") from None
    # the stamp from before the read: a file replaced meanwhile has another one, and is read again next time
    _last = (stamp, table) if stamp is not None else None
    return table


def save(table: ServiceTable) -> None:
    global _last
    path = store_path()
    _last = None
    with paused():
        statefile.write_json(path, table.to_dict(), compact=True)
    stamp = _stamp(path)
    _last = (stamp, table) if stamp is not None else None
